# Copyright (c) mmvfm contributors. All rights reserved.
"""MT-AdamW (Uni-Perceiver v2's TBGN): the paper's two-step example, an
independent NumPy reference, untouched no-grad parameters, the errors,
clipping after the normalisation, resume, the task hook in a Runner with
the multi-task loop, and 2-rank DDP (gloo) equal to one process."""

import copy
import io
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmvfm.engine.hooks import TaskAwareOptimizerHook
from mmvfm.engine.optimizers import MTAdamW, MTAdamWOptimWrapper
from mmvfm.engine.runner import TaskSampler
from mmvfm.models.multi_task import BaseMultiTaskModel

pytestmark = pytest.mark.usefixtures('one_thread')

RATIOS = dict(a=0.5, b=0.3, c=0.2)
WEIGHTS = dict(b=0.5, c=2.0)  # a: 1


def _set_grads(params: Dict[str, torch.Tensor], grads: dict) -> None:
    """``p.grad`` from ``grads`` (name -> list/array); None for the rest."""
    for name, p in params.items():
        p.grad = (
            torch.tensor(grads[name], dtype=p.dtype) if name in grads else None
        )


# 1 -------------------------------------------------------------------------
def test_two_step_example():
    """The worked example: s = 0.5 then 0.25, paper-convention betas
    (0.1, 0.001), no bias correction."""
    theta = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = MTAdamW(
        [theta],
        task_ratios=dict(a=0.5, b=0.25, c=0.25),
        lr=0.01,
        eps=1e-8,
        weight_decay=0.0,
    )
    theta.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    opt.set_task('a')
    opt.step()
    np.testing.assert_allclose(
        theta.tolist(), [0.955279, -2.044721], rtol=0, atol=1e-6
    )
    theta.grad = torch.tensor([0.0, -2.0], dtype=torch.float64)
    opt.set_task('b')
    opt.step()
    np.testing.assert_allclose(
        theta.tolist(), [0.915009, -2.009486], rtol=0, atol=1e-6
    )


# 2 -------------------------------------------------------------------------
SHAPES = dict(w=(3, 4), bias=(4,), head_a=(2,), head_b=(3,), head_c=(2, 2))
# (lr, weight_decay, betas) of each parameter's group
GROUPS = [
    (['w', 'bias'], 0.01, 0.05, (0.1, 0.001)),
    (['head_a', 'head_b', 'head_c'], 0.02, 0.1, (0.15, 0.01)),
]
TASKS = ['a', 'b', 'c', 'a', 'a', 'c', 'b', 'a', 'c', 'b']


def _steps(seed: int = 0) -> List[tuple]:
    """(task, name -> gradient) of each step: the shared ``w`` always,
    ``bias`` on 2 steps of 3, the task's own head; the others no grad."""
    rng = np.random.default_rng(seed)
    steps = []
    for i, task in enumerate(TASKS):
        names = ['w', f'head_{task}'] + (['bias'] if i % 3 else [])
        steps.append(
            (task, {n: rng.normal(size=SHAPES[n]) * 3 for n in names})
        )
    return steps


def _init_values(seed: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(size=s) for n, s in SHAPES.items()}


def _numpy_mt_adamw(
    values, steps, bias_correction, eps=1e-8, untouched='skip'
):
    """The module's equations in float64 NumPy, written independently.
    ``untouched='decay'``: a parameter with moments but no gradient in a
    step keeps its value; its moments decay as for g = 0 and its count
    advances."""
    values = {n: v.copy() for n, v in values.items()}
    hyper = {n: (lr, wd, b) for names, lr, wd, b in GROUPS for n in names}
    total = sum(RATIOS.values())
    m, v, t = {}, {}, {}
    for task, grads in steps:
        s = RATIOS[task] / total
        omega = WEIGHTS.get(task, 1.0)
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        if untouched == 'decay':
            for name in [n for n in t if n not in grads]:
                _, _, (b1, b2) = hyper[name]
                t[name] += 1
                m[name] = (1 - b1) * m[name]
                v[name] = (1 - b2) * v[name]
        for name, grad in grads.items():
            lr, wd, (b1, b2) = hyper[name]
            g = omega * grad / norm
            t[name] = t.get(name, 0) + 1
            m[name] = (1 - b1) * m.get(name, 0.0) + (b1 / s) * g
            v[name] = (1 - b2) * v.get(name, 0.0) + (b2 / s) * g * g
            m_hat, v_hat = m[name], v[name]
            if bias_correction:
                m_hat = m_hat / (1 - (1 - b1) ** t[name])
                v_hat = v_hat / (1 - (1 - b2) ** t[name])
            x = values[name]
            x = x - lr * wd * x
            values[name] = x - lr * m_hat / (np.sqrt(v_hat) + eps)
    return values, m, v, t


def _torch_params(values) -> Dict[str, nn.Parameter]:
    return {
        n: nn.Parameter(torch.tensor(v, dtype=torch.float64))
        for n, v in values.items()
    }


def _optimizer(params, **kwargs) -> MTAdamW:
    groups = [
        dict(
            params=[params[n] for n in names],
            lr=lr,
            weight_decay=wd,
            betas=betas,
        )
        for names, lr, wd, betas in GROUPS
    ]
    return MTAdamW(groups, task_ratios=RATIOS, task_weights=WEIGHTS, **kwargs)


@pytest.mark.parametrize('bias_correction', [False, True])
def test_matches_numpy_reference(bias_correction):
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(params, bias_correction=bias_correction)
    for task, grads in steps:
        _set_grads(params, grads)
        opt.set_task(task)
        opt.step()
    ref, m, v, t = _numpy_mt_adamw(values, steps, bias_correction)
    for name, p in params.items():
        np.testing.assert_allclose(
            p.detach().numpy(), ref[name], rtol=0, atol=1e-10, err_msg=name
        )
        state = opt.state[p]
        assert state['step'] == t[name]
        np.testing.assert_allclose(
            state['exp_avg'].numpy(), m[name], rtol=1e-10, atol=1e-14
        )
        np.testing.assert_allclose(
            state['exp_avg_sq'].numpy(), v[name], rtol=1e-10, atol=1e-16
        )
    assert opt.current_task is None  # consumed by the last step


@pytest.mark.parametrize('bias_correction', [False, True])
def test_untouched_decay_matches_numpy_reference(bias_correction):
    """``untouched='decay'`` over the 10 steps of 3 tasks: each head misses
    most steps, ``bias`` one step in three."""
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(
        params, bias_correction=bias_correction, untouched='decay'
    )
    for task, grads in steps:
        _set_grads(params, grads)
        opt.set_task(task)
        opt.step()
    ref, m, v, t = _numpy_mt_adamw(
        values, steps, bias_correction, untouched='decay'
    )
    skip, _, _, t_skip = _numpy_mt_adamw(values, steps, bias_correction)
    for name, p in params.items():
        np.testing.assert_allclose(
            p.detach().numpy(), ref[name], rtol=0, atol=1e-10, err_msg=name
        )
        state = opt.state[p]
        assert state['step'] == t[name]
        np.testing.assert_allclose(
            state['exp_avg'].numpy(), m[name], rtol=1e-10, atol=1e-14
        )
        np.testing.assert_allclose(
            state['exp_avg_sq'].numpy(), v[name], rtol=1e-10, atol=1e-16
        )
    # the shared ``w`` has a gradient at every step: both modes agree on it;
    # every head's count runs from its first step on, not its own steps
    np.testing.assert_allclose(ref['w'], skip['w'], rtol=0, atol=1e-12)
    assert t['w'] == t_skip['w'] == len(TASKS)
    first = {n: min(i for i, (_, g) in enumerate(steps) if n in g) for n in t}
    for name in ('head_a', 'head_b', 'head_c', 'bias'):
        assert t[name] == len(TASKS) - first[name] > t_skip[name]
        assert not np.allclose(ref[name], skip[name])


def test_untouched_decay_keeps_the_value_and_skips_weight_decay():
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(params, untouched='decay')
    _set_grads(params, steps[1][1])  # task b
    opt.set_task('b')
    opt.step()
    before = params['head_b'].detach().clone()
    state = copy.deepcopy(opt.state[params['head_b']])
    _set_grads(params, dict(w=np.ones(SHAPES['w']), head_a=[1.0, -1.0]))
    opt.set_task('a')
    opt.step()
    assert torch.equal(params['head_b'], before)  # weight decay 0.1 too
    after = opt.state[params['head_b']]
    b1, b2 = GROUPS[1][3]
    assert after['step'] == 2
    torch.testing.assert_close(after['exp_avg'], (1 - b1) * state['exp_avg'])
    torch.testing.assert_close(
        after['exp_avg_sq'], (1 - b2) * state['exp_avg_sq']
    )
    assert params['head_c'] not in opt.state  # never stepped: no state


def test_untouched_is_checked_and_old_states_load():
    params = _torch_params(_init_values())
    with pytest.raises(ValueError, match='untouched must be one of'):
        _optimizer(params, untouched='zero')
    opt = _optimizer(params)
    saved = opt.state_dict()
    for group in saved['param_groups']:
        del group['untouched']  # saved before the option existed
    fresh = _optimizer(params, untouched='decay')
    fresh.load_state_dict(saved)
    assert [g['untouched'] for g in fresh.param_groups] == ['skip', 'skip']


# 3 -------------------------------------------------------------------------
def test_parameters_without_grad_are_untouched():
    """A step of task ``a`` leaves ``head_b`` (state from an earlier ``b``
    step) and ``head_c`` (never stepped: no state) as they were, weight
    decay > 0 included."""
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(params)
    task, grads = steps[1]  # task b
    assert task == 'b'
    _set_grads(params, grads)
    opt.set_task(task)
    opt.step()
    before = {n: p.detach().clone() for n, p in params.items()}
    state_b = copy.deepcopy(opt.state[params['head_b']])
    _set_grads(params, dict(w=np.ones(SHAPES['w']), head_a=[1.0, -1.0]))
    opt.set_task('a')
    opt.step()
    assert torch.equal(params['head_b'], before['head_b'])
    assert torch.equal(params['bias'], before['bias'])
    assert not torch.equal(params['w'], before['w'])
    assert not torch.equal(params['head_a'], before['head_a'])
    after_b = opt.state[params['head_b']]
    assert after_b['step'] == state_b['step'] == 1
    for key in ('exp_avg', 'exp_avg_sq'):
        assert torch.equal(after_b[key], state_b[key])
    assert params['head_c'] not in opt.state


# 4 -------------------------------------------------------------------------
def test_errors():
    p = nn.Parameter(torch.zeros(2))
    # beta / s_k > 1 at build time: beta1 0.1 / ratio 0.05 of task 'b'
    with pytest.raises(ValueError, match=r"beta1=0.1 / ratio 0.05 .*'b'"):
        MTAdamW([p], task_ratios=dict(a=0.95, b=0.05))
    # beta2 only, and in a param group of its own
    with pytest.raises(ValueError, match=r"beta2=0.5 / ratio 0.25 .*'b'"):
        MTAdamW(
            [dict(params=[p], betas=(0.1, 0.5))],
            task_ratios=dict(a=3, b=1),
        )
    MTAdamW([p], task_ratios=dict(a=0.9, b=0.1))  # beta1 / s = 1: allowed
    with pytest.raises(ValueError, match='in \\(0, 1\\]'):
        MTAdamW([p], task_ratios=dict(a=1), betas=(0.9, 0.0))
    with pytest.raises(ValueError, match='task_weights names tasks'):
        MTAdamW([p], task_ratios=dict(a=1), task_weights=dict(x=2))
    with pytest.raises(ValueError, match='task_ratios.a must be > 0'):
        MTAdamW([p], task_ratios=dict(a=0))

    opt = MTAdamW([p], task_ratios=dict(a=0.5, b=0.5))
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match='no task set'):
        opt.step()
    with pytest.raises(KeyError, match="task 'c' has no ratio"):
        opt.set_task('c')
    opt.set_task('a')
    opt.step()
    with pytest.raises(RuntimeError, match='no task set'):  # consumed
        opt.step()


def test_builds_from_config():
    model = nn.Linear(2, 2)
    wrapper = build_optim_wrapper(
        model,
        dict(
            type='MTAdamWOptimWrapper',
            optimizer=dict(type='MTAdamW', lr=0.1, task_ratios=dict(a=1, b=3)),
            clip_grad=dict(max_norm=1.0),
        ),
    )
    assert isinstance(wrapper, MTAdamWOptimWrapper)
    assert isinstance(wrapper.optimizer, MTAdamW)
    assert wrapper.optimizer.task_ratios == dict(a=0.25, b=0.75)
    with pytest.raises(TypeError, match='needs an MTAdamW'):
        MTAdamWOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))


# 5 -------------------------------------------------------------------------
@pytest.mark.parametrize('max_norm', [None, 0.3])
def test_clipping_after_normalisation(max_norm):
    """Task c has weight 2: the optimizer steps with ``2 * grad / |grad|``,
    clipped to ``max_norm`` when that is smaller. The applied gradient is
    read back from the first moment of a first step: ``m = (beta1 / s) g``.
    """
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(params)
    clip = None if max_norm is None else dict(max_norm=max_norm)
    wrapper = MTAdamWOptimWrapper(opt, clip_grad=clip)
    task, grads = steps[2]
    assert task == 'c'
    _set_grads(params, grads)
    raw = [p.grad.clone() for p in params.values() if p.grad is not None]
    opt.set_task(task)
    wrapper.step()
    s = RATIOS['c'] / sum(RATIOS.values())
    applied = [
        opt.state[p]['exp_avg'] * s / group['betas'][0]
        for group in opt.param_groups
        for p in group['params']
        if p.grad is not None
    ]
    norm = torch.nn.utils.get_total_norm(applied).item()
    expected = 2.0 if max_norm is None else max_norm
    # (clip_grad_norm_ divides by norm + 1e-6)
    assert norm == pytest.approx(expected, rel=1e-6)
    raw_norm = torch.nn.utils.get_total_norm(raw).item()
    for g, r in zip(applied, raw):  # same direction
        torch.testing.assert_close(g, r * (norm / raw_norm))


def test_zero_gradient_norm_skips_the_step():
    values, steps = _init_values(), _steps()
    params = _torch_params(values)
    opt = _optimizer(params, weight_decay=0.1)
    _set_grads(params, steps[0][1])
    opt.set_task('a')
    opt.step()
    before = {n: p.detach().clone() for n, p in params.items()}
    state = copy.deepcopy(opt.state_dict())
    _set_grads(params, dict(w=np.zeros(SHAPES['w']), head_a=[0.0, 0.0]))
    opt.set_task('a')
    MTAdamWOptimWrapper(opt, clip_grad=dict(max_norm=0.3)).step()
    for name, p in params.items():
        assert torch.equal(p, before[name]), name
    after = opt.state_dict()
    for idx, s in state['state'].items():
        for key, value in s.items():
            assert torch.equal(
                torch.as_tensor(after['state'][idx][key]),
                torch.as_tensor(value),
            )
    assert opt.current_task is None


# 6 -------------------------------------------------------------------------
def test_state_dict_round_trip():
    """Stop after 5 steps, save, load into a new optimizer (and new
    parameters): the next 5 steps equal those of the uninterrupted one."""
    values, steps = _init_values(), _steps()

    def run(params, opt, part):
        for task, grads in part:
            _set_grads(params, grads)
            opt.set_task(task)
            opt.step()

    params = _torch_params(values)
    opt = _optimizer(params, bias_correction=True)
    run(params, opt, steps[:5])
    buffer = io.BytesIO()
    torch.save(
        dict(
            optimizer=opt.state_dict(),
            params={n: p.detach().clone() for n, p in params.items()},
        ),
        buffer,
    )
    run(params, opt, steps[5:])

    buffer.seek(0)
    ckpt = torch.load(buffer)
    assert {'step', 'exp_avg', 'exp_avg_sq'} <= set(
        ckpt['optimizer']['state'][0]
    )
    resumed = {n: nn.Parameter(v) for n, v in ckpt['params'].items()}
    opt2 = _optimizer(resumed, bias_correction=True)
    opt2.load_state_dict(ckpt['optimizer'])
    run(resumed, opt2, steps[5:])
    for name, p in params.items():
        assert torch.equal(p, resumed[name]), name
        assert opt.state[p]['step'] == opt2.state[resumed[name]]['step']


# 7 -------------------------------------------------------------------------
class _TwoTaskNet(BaseMultiTaskModel):
    """A shared trunk and one linear head per task; loss of the batch's
    task."""

    tasks = ('a', 'b')

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(4, 4)
        self.heads = nn.ModuleDict(dict(a=nn.Linear(4, 1), b=nn.Linear(4, 2)))

    def forward(self, inputs, task: str, mode: str = 'tensor'):
        out = self.heads[task](torch.tanh(self.trunk(inputs)))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


def _collate(batch):
    return dict(inputs=torch.stack(batch))


@HOOKS.register_module(force=True)
class _StepTaskRecorderHook(Hook):
    """Records the task of every MTAdamW step (class attribute: the Runner
    builds its own instance)."""

    tasks: List[str] = []

    def before_train(self, runner) -> None:
        _StepTaskRecorderHook.tasks = []
        runner.optim_wrapper.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.tasks.append(opt.current_task)
        )


def test_hook_sets_the_drawn_task_in_a_runner(tmp_path):
    n_iters, seed = 12, 7
    ratios = dict(a=0.7, b=0.3)
    data = [
        torch.randn(4, generator=torch.Generator().manual_seed(i))
        for i in range(8)
    ]
    loaders = {
        t: DataLoader(data, batch_size=2, collate_fn=_collate) for t in ratios
    }
    runner = Runner(
        model=_TwoTaskNet(),
        work_dir=str(tmp_path),
        experiment_name='mt_adamw_hook',
        train_dataloader=loaders,
        train_cfg=dict(
            type='MultiTaskIterBasedTrainLoop',
            max_iters=n_iters,
            task_ratios=ratios,
            seed=seed,
        ),
        optim_wrapper=dict(
            type='MTAdamWOptimWrapper',
            optimizer=dict(type='MTAdamW', lr=0.01, task_ratios=ratios),
            clip_grad=dict(max_norm=0.5),
        ),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[
            dict(type='TaskAwareOptimizerHook'),
            dict(type='_StepTaskRecorderHook'),
        ],
        default_scope='mmdet',
    )
    head_b = runner.model.heads.b.weight.detach().clone()
    runner.train()
    sampler = TaskSampler(ratios, 'unmixed', seed=seed)
    expected = [sampler.task_at(i) for i in range(n_iters)]
    assert set(expected) == {'a', 'b'}
    assert _StepTaskRecorderHook.tasks == expected
    assert not torch.equal(runner.model.heads.b.weight, head_b)


def test_hook_refuses_bad_setups():
    p = nn.Parameter(torch.zeros(2))
    sampler = TaskSampler(dict(a=1, b=1), 'unmixed', 0)
    loop = SimpleNamespace(task_sampler=sampler)

    def runner(wrapper, train_loop=loop):
        return SimpleNamespace(optim_wrapper=wrapper, train_loop=train_loop)

    hook = TaskAwareOptimizerHook()
    good = MTAdamWOptimWrapper(MTAdamW([p], task_ratios=dict(a=2, b=2)))
    hook.before_train(runner(good))
    other = MTAdamWOptimWrapper(MTAdamW([p], task_ratios=dict(a=1, b=3)))
    with pytest.raises(ValueError, match="differ from the train loop's"):
        hook.before_train(runner(other))
    plain = OptimWrapper(
        MTAdamW([p], task_ratios=dict(a=1, b=1)), clip_grad=dict(max_norm=1)
    )
    with pytest.raises(ValueError, match='clips before MTAdamW normalises'):
        hook.before_train(runner(plain))
    sgd = OptimWrapper(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(TypeError, match='no MTAdamW'):
        hook.before_train(runner(sgd))
    with pytest.raises(TypeError, match='multi-task train loop'):
        hook.before_train(runner(good, SimpleNamespace()))
    with pytest.raises(KeyError, match="has no 'task'"):
        hook.before_train_iter(runner(good), 0, dict(inputs=None))
    hook.before_train_iter(runner(good), 0, dict(task='b'))
    assert good.optimizer.current_task == 'b'


# 8 -------------------------------------------------------------------------
DDP_TASKS = ['a', 'b', 'a', 'a', 'b']


class _DDPNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleDict(dict(a=nn.Linear(4, 2), b=nn.Linear(4, 1)))

    def forward(self, x, task: str):
        return self.heads[task](torch.tanh(self.trunk(x)))


def _ddp_batch(step: int, task: str, rank=None):
    """Step ``step``'s batch of 4, or ``rank``'s half of it."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 2 if task == 'a' else 1, generator=gen).double()
    rows = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)
    return x[rows], y[rows]


def _train_ddp_net(rank=None) -> dict:
    """MT-AdamW (weights, decay, clipping active) over ``DDP_TASKS``; under
    DDP when ``rank`` is given. Returns the parameters as lists."""
    torch.set_num_threads(1)
    net = _DDPNet().double()
    model = net
    if rank is not None:
        model = nn.parallel.DistributedDataParallel(
            net, find_unused_parameters=True
        )
    opt = MTAdamW(
        net.parameters(),
        task_ratios=dict(a=0.6, b=0.4),
        task_weights=dict(b=1.5),
        lr=0.05,
        weight_decay=0.01,
        bias_correction=True,
    )
    wrapper = MTAdamWOptimWrapper(opt, clip_grad=dict(max_norm=0.8))
    for step, task in enumerate(DDP_TASKS):
        x, y = _ddp_batch(step, task, rank)
        opt.set_task(task)
        wrapper.update_params(F.mse_loss(model(x, task), y))
    return {n: p.detach().tolist() for n, p in net.named_parameters()}


def _rank1_child(port: int, queue) -> None:
    """Rank 1 in a spawned process; puts ``('ok', params)`` or
    ``('crash', traceback)`` on ``queue``."""
    import traceback

    import torch.distributed as dist

    try:
        dist.init_process_group(
            'gloo',
            init_method=f'tcp://127.0.0.1:{port}',
            rank=1,
            world_size=2,
        )
        queue.put(('ok', _train_ddp_net(1)))
    except Exception:
        queue.put(('crash', traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_rank_ddp_equals_one_process():
    """Unmixed: both ranks train the same task on half the batch each; DDP
    averages the gradients, whose norm is the full batch's.

    This process is rank 0 and one spawned process rank 1 (not
    ``run_gloo_ranks``' two children: a child spends most of this test
    importing mmvfm, and one import fewer keeps it fast)."""
    import multiprocessing as mp
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    child = ctx.Process(target=_rank1_child, args=(port, queue))
    child.start()
    try:
        dist.init_process_group(
            'gloo',
            init_method=f'tcp://127.0.0.1:{port}',
            rank=0,
            world_size=2,
            timeout=timedelta(seconds=120),
        )
        try:
            rank0 = _train_ddp_net(0)
        finally:
            dist.destroy_process_group()
        kind, rank1 = queue.get(timeout=120)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert kind == 'ok', rank1
    single = _train_ddp_net()
    init = {n: p.detach().tolist() for n, p in _DDPNet().named_parameters()}
    assert rank0 == rank1
    for name, value in single.items():
        np.testing.assert_allclose(
            rank0[name], value, rtol=0, atol=1e-10, err_msg=name
        )
        assert not np.allclose(value, init[name]), name  # all trained
