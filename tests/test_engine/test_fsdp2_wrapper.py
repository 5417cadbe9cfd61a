# Copyright (c) mmvfm contributors. All rights reserved.
"""FSDP2Wrapper on CPU/gloo: two ranks equal one process over the whole
batch (LoRA gradients, AdamW steps, global-norm clipping), full-tensor
checkpoints that resume exactly, the errors; and a 2-process Runner run
(torchrun) with the wrapper, a checkpoint and a resume."""

import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import REPO_ROOT, TINY_VIT, run_gloo_ranks, tiny_multitask_cfg
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper

from mmvfm.engine import FSDP2Wrapper
from mmvfm.models.common.grad_checkpoint import enable_gradient_checkpointing
from mmvfm.models.peft import apply_lora

pytestmark = pytest.mark.usefixtures('one_thread')

PATTERN = r'backbone\.layers\.\d+'
MAX_NORM = 1e-3  # far below the gradient norm: clipping is active
LR = 1e-2


class _TinyClassifier(BaseModel):
    """TINY_VIT (LoRA on q and v of every qkv, gradient-checkpointed
    blocks) and a linear head on its class token."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MODELS.build(TINY_VIT)
        apply_lora(
            self.backbone,
            [
                dict(
                    pattern=r'layers\.\d+\.attn\.qkv',
                    parts=[True, False, True],
                )
            ],
            rank=4,
        )
        enable_gradient_checkpointing(self.backbone, r'layers\.\d+')
        self.head = nn.Linear(32, 3)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1])
        if mode == 'loss':
            return dict(loss_cls=F.cross_entropy(logits, labels))
        return logits


def _build(dtype=torch.float64) -> _TinyClassifier:
    """The same model on every rank and in the reference: base frozen,
    LoRA (``B`` random, so ``A`` gets gradients too) and head trainable."""
    torch.manual_seed(0)
    model = _TinyClassifier()
    model.init_weights()
    for name, param in model.named_parameters():
        if '.lora_B' in name:
            nn.init.normal_(param, std=0.1)
        param.requires_grad_('.lora_' in name or name.startswith('head.'))
    return model.to(dtype)


def _batch(step: int, rank=None, dtype=torch.float64) -> dict:
    """Step ``step``'s global batch of 4, or rank ``rank``'s half."""
    gen = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn(4, 3, 32, 32, generator=gen, dtype=dtype)
    labels = torch.randint(0, 3, (4,), generator=gen)
    rows = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)
    return dict(inputs=inputs[rows], labels=labels[rows])


def _full(value):
    return value.full_tensor() if hasattr(value, 'full_tensor') else value


def _trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _optim_wrappers(model):
    """AdamW over the trainable parameters, in a plain and a clipping
    OptimWrapper; the gradients the optimizer steps with are recorded."""
    optimizer = torch.optim.AdamW(
        _trainable(model).values(), lr=LR, weight_decay=0.05
    )
    grads, dtypes = [], set()
    names = list(_trainable(model))

    def record(opt, args, kwargs):
        params = [p for g in opt.param_groups for p in g['params']]
        grads.append(
            {n: _full(p.grad).tolist() for n, p in zip(names, params)}
        )
        dtypes.update(str(p.grad.dtype) for p in params)

    optimizer.register_step_pre_hook(record)
    plain = OptimWrapper(optimizer)
    clipped = OptimWrapper(optimizer, clip_grad=dict(max_norm=MAX_NORM))
    return plain, clipped, grads, dtypes


def _params(model) -> dict:
    return {
        n: _full(p.detach()).tolist() for n, p in _trainable(model).items()
    }


def _worker(rank, ckpt_path):
    from mmengine.runner.checkpoint import load_state_dict
    from torch.distributed.tensor import DTensor

    out = {}
    # (d) a pattern that matches nothing
    try:
        FSDP2Wrapper(_build(), shard_pattern=r'no\.such\.layer')
    except ValueError as e:
        out['no_match'] = str(e)

    wrapper = FSDP2Wrapper(
        _build(), shard_pattern=PATTERN, init_weights_before_shard=False
    )
    model = wrapper.module
    out['units'] = wrapper.sharded_modules
    out['frozen_dtensor'] = (
        all(isinstance(p, DTensor) for p in model.parameters())
        and not model.backbone.layers[0].attn.qkv.weight.requires_grad
    )
    plain, clipped, grads, _ = _optim_wrappers(model)
    # (a) one step, then (b) one step with global-norm clipping
    out['loss'] = wrapper.train_step(_batch(1, rank), plain)['loss'].item()
    out['params1'] = _params(model)
    wrapper.train_step(_batch(2, rank), clipped)
    out['grad_norm'] = clipped.message_hub.get_scalar(
        'train/grad_norm'
    ).current()
    out['params2'] = _params(model)
    out['grads'] = grads[:2]

    # (c) state dicts: the guard, sharded, full
    try:
        model.state_dict()
    except RuntimeError as e:
        out['guard'] = str(e)
    with wrapper.sharded_state_dict():
        sharded = model.state_dict()
    out['sharded'] = {k: type(v).__name__ for k, v in sharded.items()}
    full = wrapper.state_dict()
    out['full'] = {
        k: (type(v).__name__, str(v.device), v.tolist())
        for k, v in full.items()
    }
    # the checkpoint as the Runner writes it: rank 0 alone saves
    with wrapper.full_state(clipped):
        if rank == 0:
            torch.save(
                dict(
                    state_dict=model.state_dict(),
                    optimizer=clipped.state_dict(),
                ),
                ckpt_path,
            )
    torch.distributed.barrier()
    # resume into a perturbed model and optimizer, then step 3
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    for state in clipped.optimizer.state.values():
        state['exp_avg_sq'].zero_()
    ckpt = torch.load(ckpt_path, weights_only=False)
    load_state_dict(wrapper, ckpt['state_dict'], strict=True)  # mmengine's
    out['reloaded_equal'] = all(
        torch.equal(v, full[k]) for k, v in wrapper.state_dict().items()
    )
    clipped.load_state_dict(ckpt['optimizer'])
    out['optim_sharded'] = all(
        isinstance(s['exp_avg'], DTensor)
        for s in clipped.optimizer.state.values()
    )
    wrapper.train_step(_batch(3, rank), clipped)
    out['params3'] = _params(model)

    # mixed precision (bfloat16 compute, float32 reduction) on the CPU
    mp = FSDP2Wrapper(
        _build(torch.float32),
        shard_pattern=PATTERN,
        mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'),
        init_weights_before_shard=False,
        # the other FSDP2 options, on the way
        reshard_after_forward=False,
        reduce_scatter_unused_params=True,
    )
    mp_plain, _, mp_grads, mp_grad_dtypes = _optim_wrappers(mp.module)
    mp.train_step(_batch(1, rank, torch.float32), mp_plain)
    out['mp_grads'] = mp_grads[0]
    out['mp_state_shapes'] = {
        k: list(v.shape) for k, v in mp.state_dict().items()
    }
    out['mp_dtypes'] = sorted(
        {str(p.dtype) for p in mp.module.parameters()} | mp_grad_dtypes
    )
    return out


def _reference():
    """One process, the whole batch, mmengine's BaseModel.train_step."""
    model = _build()
    plain, clipped, grads, _ = _optim_wrappers(model)
    ref = {}
    ref['loss'] = model.train_step(_batch(1), plain)['loss'].item()
    ref['params1'] = _params(model)
    model.train_step(_batch(2), clipped)
    ref['grad_norm'] = clipped.message_hub.get_scalar(
        'train/grad_norm'
    ).current()
    ref['params2'] = _params(model)
    ref['state_dict'] = {k: v.clone() for k, v in model.state_dict().items()}
    model.train_step(_batch(3), clipped)
    ref['params3'] = _params(model)
    ref['grads'] = grads[:2]
    # float32 gradients for the mixed-precision check
    model32 = _build(torch.float32)
    plain32, _, grads32, _ = _optim_wrappers(model32)
    model32.train_step(_batch(1, dtype=torch.float32), plain32)
    ref['grads32'] = grads32[0]
    return ref


def _close(actual: dict, expected: dict, **tol) -> None:
    assert actual.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(
            torch.tensor(actual[k]), torch.tensor(expected[k]), msg=k, **tol
        )


def test_two_ranks_equal_one_process(tmp_path):
    """One process group for every check (a spawn costs seconds)."""
    ckpt_path = str(tmp_path / 'ckpt.pth')
    results = run_gloo_ranks(_worker, ckpt_path)
    ref = _reference()
    lora = [k for k in ref['params1'] if '.lora_' in k]
    assert len(lora) == 4 and 'head.weight' in ref['params1']
    tol = dict(rtol=1e-9, atol=1e-9)  # float64
    # each rank logs its half's mean loss
    mean_loss = (results[0]['loss'] + results[1]['loss']) / 2
    assert mean_loss == pytest.approx(ref['loss'], rel=1e-12)
    for rank in (0, 1):
        res = results[rank]
        assert res['units'] == ['backbone.layers.0', 'backbone.layers.1']
        assert res['frozen_dtensor']
        # (a) full-batch gradients and the AdamW step
        _close(res['grads'][0], ref['grads'][0], **tol)
        _close(res['params1'], ref['params1'], **tol)
        # (b) the clipped gradients: the norm is over both ranks' shards
        assert ref['grad_norm'] > 10 * MAX_NORM
        assert res['grad_norm'] == pytest.approx(ref['grad_norm'], rel=1e-9)
        _close(res['grads'][1], ref['grads'][1], **tol)
        total = torch.linalg.vector_norm(
            torch.stack(
                [torch.tensor(g).norm() for g in res['grads'][1].values()]
            )
        )
        assert total.item() == pytest.approx(MAX_NORM, rel=1e-5)
        _close(res['params2'], ref['params2'], **tol)
        # (c) state dicts: sharded on request, else full plain CPU tensors
        assert set(res['sharded'].values()) == {'DTensor'}
        assert res['full'].keys() == ref['state_dict'].keys()
        for key, (kind, device, value) in res['full'].items():
            assert (kind, device) == ('Tensor', 'cpu'), key
            torch.testing.assert_close(
                torch.tensor(value, dtype=torch.float64),
                ref['state_dict'][key],
                msg=key,
                **tol,
            )
        assert 'FSDP2StateDictHook' in res['guard']
        # resumed from the checkpoint, step 3 as without interruption
        assert res['reloaded_equal'] and res['optim_sharded']
        _close(res['params3'], ref['params3'], **tol)
        # mixed precision: float32 shards and gradients, bf16 compute
        assert res['mp_dtypes'] == ['torch.float32']
        assert res['mp_state_shapes'] == {
            k: list(v.shape) for k, v in ref['state_dict'].items()
        }
        for key, grad in ref['grads32'].items():
            cos = F.cosine_similarity(
                torch.tensor(res['mp_grads'][key]).flatten(),
                torch.tensor(grad).flatten(),
                dim=0,
            )
            assert cos > 0.99, (key, cos)
        # (d) a pattern that matches nothing: named, with examples
        assert r'no\\.such\\.layer' in res['no_match']
        assert 'backbone' in res['no_match']
    # the checkpoint holds plain full tensors, the model's own keys
    ckpt = torch.load(ckpt_path, weights_only=False)
    sd = ckpt['state_dict']
    assert sd.keys() == ref['state_dict'].keys()
    for key, value in sd.items():
        assert type(value) is torch.Tensor, key
        assert value.shape == ref['state_dict'][key].shape, key
    states = ckpt['optimizer']['state']
    assert len(states) == len(ref['params1'])
    for idx, name in enumerate(ref['params1']):
        assert type(states[idx]['exp_avg']) is torch.Tensor
        assert states[idx]['exp_avg'].shape == sd[name].shape


def test_needs_a_process_group():
    with pytest.raises(RuntimeError, match='process group'):
        FSDP2Wrapper(nn.Linear(2, 2), shard_pattern='x')


# ----------------------------------------------------------------------
# (e) the Runner, 2 processes under torchrun (as tools/dist_train.sh)
def _fsdp2_runner_cfg(toy_root: str, work_dir: str):
    """The tiny multi-task config made a ViSFT stage 2 in miniature:
    TINY_VIT (64 px) with LoRA on q and v, a classification head, only
    LoRA trains, FSDP2 per block; a checkpoint every iteration, the best
    one too, kept."""
    cfg = tiny_multitask_cfg(toy_root, work_dir, max_iters=2, name='fsdp2')
    cfg.model.backbone = dict(
        type='LoRA',
        module=dict(TINY_VIT, img_size=64),
        targets=[
            dict(pattern=r'layers\.\d+\.attn\.qkv', parts=[True, False, True])
        ],
        rank=4,
    )
    cfg.model.tasks = dict(
        cls=dict(
            type='ClsTaskHead',
            head=dict(
                type='mmpretrain.LinearClsHead',
                num_classes=5,
                in_channels=32,
                loss=dict(type='mmpretrain.CrossEntropyLoss'),
                topk=(1,),
            ),
        )
    )
    cfg.model['freeze'] = dict(trainable=[r'\.lora_'])
    cfg.model.data_preprocessor.preprocessors = dict(
        cls=dict(
            cfg.model.data_preprocessor.preprocessors.cls, pad_size_divisor=8
        )
    )
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key] = dict(cls=cfg[key].cls)
    # a fixed seed and no random flips: a resumed run sees the same batches
    cfg.randomness = dict(seed=0)
    pipeline = cfg.train_dataloader.cls.dataset.pipeline
    pipeline[:] = [t for t in pipeline if t['type'] != 'RandomFlip']
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key] = dict(cls=cfg[key].cls)
    cfg.train_cfg.task_ratios = dict(cls=1.0)
    cfg.default_hooks.checkpoint.update(
        interval=1, max_keep_ckpts=-1, save_best='cls/accuracy/top1'
    )
    cfg.default_hooks.pop('visualization')
    cfg.model_wrapper_cfg = dict(type='FSDP2Wrapper', shard_pattern=PATTERN)
    cfg.custom_hooks = [dict(type='FSDP2StateDictHook')]
    cfg.launcher = 'pytorch'
    return cfg


def _runner_main(cfg_path: str, resumed_dir: str) -> None:
    """torchrun entry (each rank): train 2 iterations, then a second
    Runner resumes the first one's iteration-1 checkpoint and trains
    iteration 2 again."""
    import copy

    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(cfg_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    info = dict(
        wrapper=type(runner.model).__name__,
        units=runner.model.sharded_modules,
        world_size=torch.distributed.get_world_size(),
    )
    cfg2 = copy.deepcopy(cfg)
    cfg2.merge_from_dict(
        {
            'work_dir': resumed_dir,
            'experiment_name': 'fsdp2_resumed',
            'visualizer.name': 'fsdp2_resumed',
            'resume': True,
            'load_from': osp.join(cfg.work_dir, 'iter_1.pth'),
        }
    )
    Runner.from_cfg(cfg2).train()
    if torch.distributed.get_rank() == 0:
        with open(osp.join(resumed_dir, 'info.json'), 'w') as f:
            json.dump(info, f)


def test_runner_two_processes_checkpoint_and_resume(toy_root, tmp_path):
    work_dir, resumed_dir = str(tmp_path / 'run'), str(tmp_path / 'resumed')
    cfg = _fsdp2_runner_cfg(toy_root, work_dir)
    cfg_path = str(tmp_path / 'fsdp2_cfg.py')
    cfg.dump(cfg_path)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    tests_dir = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO_ROOT, tests_dir, env.get('PYTHONPATH', '')]
    )
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node=2',
            '--master_addr=127.0.0.1',
            f'--master_port={port}',
            osp.abspath(__file__),
            cfg_path,
            resumed_dir,
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(osp.join(resumed_dir, 'info.json')) as f:
        info = json.load(f)
    assert info == dict(
        wrapper='FSDP2Wrapper',
        units=['backbone.layers.0', 'backbone.layers.1'],
        world_size=2,
    )
    ckpts = {
        name: torch.load(osp.join(work_dir, name), weights_only=False)
        for name in os.listdir(work_dir)
        if name.endswith('.pth')
    }
    assert {'iter_1.pth', 'iter_2.pth'} <= ckpts.keys()
    assert any(name.startswith('best_cls_accuracy') for name in ckpts)
    # an unwrapped model's checkpoint: plain full tensors, its own keys
    model = MODELS.build(cfg.model)
    expected = model.state_dict()
    lora = sorted(k for k in expected if '.lora_' in k)
    assert len(lora) == 4
    for name, ckpt in ckpts.items():
        sd = ckpt['state_dict']
        assert sd.keys() == expected.keys(), name
        for key, value in sd.items():
            assert type(value) is torch.Tensor, (name, key)
            assert value.shape == expected[key].shape, (name, key)
    # the optimizer (LoRA only): full state tensors
    states = ckpts['iter_2.pth']['optimizer']['state']
    assert sorted(s['exp_avg'].shape for s in states.values()) == sorted(
        expected[k].shape for k in lora
    )
    # LoRA trained, the frozen base did not change
    first, second = (
        ckpts['iter_1.pth']['state_dict'],
        ckpts['iter_2.pth']['state_dict'],
    )
    assert not torch.equal(first[lora[0]], second[lora[0]])
    base = 'backbone.layers.0.attn.qkv.weight'
    assert torch.equal(first[base], second[base])
    # resumed at iteration 1: iteration 2 again, the same model and state
    resumed = torch.load(
        osp.join(resumed_dir, 'iter_2.pth'), weights_only=False
    )
    assert resumed['meta']['iter'] == 2
    for key, value in second.items():
        torch.testing.assert_close(resumed['state_dict'][key], value, msg=key)
    for idx, state in ckpts['iter_2.pth']['optimizer']['state'].items():
        for k, v in state.items():
            torch.testing.assert_close(
                resumed['optimizer']['state'][idx][k], v, msg=f'{idx}.{k}'
            )


if __name__ == '__main__':
    _runner_main(*sys.argv[1:])
