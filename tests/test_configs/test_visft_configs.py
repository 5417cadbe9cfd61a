# Copyright (c) mmvfm contributors. All rights reserved.
"""ViSFT's two stages as configs (configs/visft/): what each stage trains
and with which recipe, checked on models built on the meta device (no
weights allocated, no checkpoint read; EVA-CLIP ViT-G included).

Stage 1 (one per task): the backbone frozen, the head trained, the paper's
lrs (COCO) or their ratios (toy). Stage 2: only LoRA on the q and v parts
of every block's qkv trains, the heads come from the stage-1 checkpoints,
tasks drawn caption 0.4 / seg 0.3 / det 0.3, gradient checkpointing active.
"""

import copy
import os.path as osp
import re

import pytest
import torch
from conftest import REPO_ROOT
from mmengine.config import Config

VISFT = osp.join(REPO_ROOT, 'configs', 'visft')
TASKS = ('det', 'seg', 'caption')
SETTINGS = {
    # stage-1 config per task, stage-2 config, ViT blocks, LoRA rank
    'toy': dict(
        stage1=dict(
            det='visft_stage1-det_vit-t8_deformable-detr_1xb8-300i_toy-coco',
            seg='visft_stage1-seg_vit-t8_mask2former_1xb8-300i_toy-coco',
            caption='visft_stage1-cap_vit-t8_caption_1xb8-300i_toy-coco',
        ),
        stage2='visft_stage2_vit-t8_lora-r8_1xb8-300i_toy-coco',
        blocks=6,
        rank=8,
    ),
    'coco': dict(
        stage1=dict(
            det='visft_stage1-det_eva-g-p14_detr_8xb1-150k_coco',
            seg='visft_stage1-seg_eva-g-p14_mask2former_8xb1-150k_coco',
            caption='visft_stage1-cap_eva-g-p14_caption_8xb32-100k_coco',
        ),
        stage2='visft_stage2_eva-g-p14_lora-r64_8xb1-100k_coco',
        blocks=40,
        rank=64,
    ),
}
PAPER_LR = dict(det=5e-5, seg=5e-5, caption=4e-4, stage2=1e-5)


def _cfg(name: str) -> Config:
    return Config.fromfile(osp.join(VISFT, name + '.py'))


def _build(cfg: Config):
    from mmdet.registry import MODELS

    from mmvfm.utils import drop_pretrained

    model_cfg = copy.deepcopy(cfg.model)  # drop_pretrained edits in place
    drop_pretrained(model_cfg)
    with torch.device('meta'):
        return MODELS.build(model_cfg)


@pytest.fixture(scope='module', params=list(SETTINGS))
def setting(request):
    return request.param, SETTINGS[request.param]


@pytest.fixture(scope='module')
def stage2(setting):
    _, s = setting
    cfg = _cfg(s['stage2'])
    return cfg, _build(cfg)


def _optim(cfg: Config):
    return cfg.optim_wrapper


def _schedule(cfg: Config):
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == cosine.begin
    assert cosine.type == 'CosineAnnealingLR'
    assert cosine.end == cfg.train_cfg.max_iters and cosine.eta_min == 0
    return warmup.end


# ---------------------------------------------------------------- stage 2
def test_stage2_trains_only_lora(stage2):
    _, model = stage2
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(re.search(r'\.lora_[AB]$', n) for n in trainable), trainable
    for part in [model.backbone, *model.heads.values()]:
        frozen = [
            n
            for n, p in part.named_parameters()
            if 'lora_' not in n and p.requires_grad
        ]
        assert not frozen, frozen[:5]
    assert sum(p.numel() for p in model.heads.parameters()) > 0


def test_stage2_lora_on_q_and_v_of_every_qkv(setting, stage2):
    from mmvfm.models.peft import lora_layers

    name, s = setting
    _, model = stage2
    layers = dict(lora_layers(model.backbone))
    expected = {f'layers.{i}.attn.qkv' for i in range(s['blocks'])}
    assert set(layers) == expected
    for layer in layers.values():
        assert layer.parts == [True, False, True]  # q, not k, v
        assert layer.rank == s['rank']
        if name == 'coco':  # the paper's scaling: alpha 1 / rank 64
            assert layer.scaling == pytest.approx(1 / 64)
        assert isinstance(layer.lora_dropout, torch.nn.Identity)
        # loralib's MergedLinear shapes: A (2r, in), B (2 part, r)
        assert layer.lora_A.shape == (2 * layer.rank, layer.in_features)
        assert layer.lora_B.shape == (2 * layer.part_size, layer.rank)
    # no adapter anywhere else (heads included)
    assert len(dict(lora_layers(model))) == s['blocks']


def test_stage2_gradient_checkpointing_is_active(setting, stage2):
    """Every block checkpointed and in train mode after ``train()``: a
    frozen module runs in eval mode, where the checkpointing is off."""
    _, s = setting
    _, model = stage2
    model.train()
    for i in range(s['blocks']):
        block = model.backbone.layers[i]
        assert getattr(type(block), '_mmvfm_checkpointed', False)
        assert block.training
    assert all(head.training for head in model.heads.values())


def test_stage2_heads_load_stage1_checkpoints(setting, stage2):
    _, s = setting
    cfg, _ = stage2
    for task in TASKS:
        stage1 = _cfg(s['stage1'][task])
        init = cfg.model.tasks[task].init_cfg
        assert init.type == 'Pretrained'
        assert init.prefix == f'heads.{task}.'
        # the stage-1 run's last checkpoint (CheckpointHook save_last)
        assert init.checkpoint == (
            f'work_dirs/{s["stage1"][task]}/'
            f'iter_{stage1.train_cfg.max_iters}.pth'
        )
        assert stage1.default_hooks.checkpoint.save_last
        # same head config: the checkpoint's keys are the head's
        head = cfg.model.tasks[task].to_dict()
        head.pop('init_cfg')
        assert head == stage1.model.tasks[task].to_dict()
        # same data and preprocessing
        assert (
            cfg.train_dataloader[task].dataset.to_dict()
            == stage1.train_dataloader[task].dataset.to_dict()
        )
        assert (
            cfg.model.data_preprocessor.preprocessors[task]
            == stage1.model.data_preprocessor.preprocessors[task]
        )


def test_stage2_backbone_is_stage1_backbone(setting, stage2):
    _, s = setting
    cfg, _ = stage2
    lora = cfg.model.backbone
    assert lora.type == 'LoRA' and lora.module.type == 'GradientCheckpointing'
    assert lora.module.pattern == r'layers\.\d+'
    for task in TASKS:
        stage1 = _cfg(s['stage1'][task])
        assert lora.module.module == stage1.model.backbone
        assert lora.module.module.init_cfg.type == 'Pretrained'


def test_stage2_task_ratios_and_recipe(setting, stage2):
    name, _ = setting
    cfg, _ = stage2
    ratios = cfg.train_cfg.task_ratios
    assert dict(ratios) == dict(caption=0.4, seg=0.3, det=0.3)
    assert sum(ratios.values()) == pytest.approx(1.0)
    assert cfg.train_cfg.strategy == 'unmixed'
    assert set(cfg.train_dataloader) == set(TASKS)
    assert set(cfg.val_evaluator) == set(TASKS)
    optim = _optim(cfg)
    assert optim.constructor == 'TrainableOptimWrapperConstructor'
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.weight_decay == 1e-4
    assert optim.clip_grad.max_norm == 0.1
    warmup = _schedule(cfg)
    if name == 'coco':
        assert optim.optimizer.lr == PAPER_LR['stage2']
        assert cfg.train_cfg.max_iters == 100000 and warmup == 2000


def test_stage2_coco_fsdp2_units_are_the_blocks(stage2, setting):
    name, s = setting
    cfg, model = stage2
    if name != 'coco':
        assert 'model_wrapper_cfg' not in cfg
        return
    wrapper = cfg.model_wrapper_cfg
    assert wrapper.type == 'FSDP2Wrapper'
    regex = re.compile(wrapper.shard_pattern)
    units = {n for n, _ in model.named_modules() if regex.fullmatch(n)}
    assert units == {f'backbone.layers.{i}' for i in range(s['blocks'])}
    assert dict(type='FSDP2StateDictHook') in cfg.custom_hooks


# ---------------------------------------------------------------- stage 1
@pytest.mark.parametrize('task', TASKS)
def test_stage1_freezes_the_backbone(setting, task):
    _, s = setting
    cfg = _cfg(s['stage1'][task])
    assert list(cfg.model.tasks) == [task]
    assert dict(cfg.train_cfg.task_ratios) == {task: 1.0}
    # (item access: ConfigDict.freeze is addict's method)
    assert cfg.model['freeze'] == dict(backbone=True)
    model = _build(cfg)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads[task].parameters())
    assert model.neck is None  # each head brings its own pyramid
    optim = _optim(cfg)
    assert optim.constructor == 'TrainableOptimWrapperConstructor'
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.weight_decay == 1e-4
    assert optim.clip_grad.max_norm == 0.1
    _schedule(cfg)


def test_stage1_lrs_are_the_papers(setting):
    """COCO: the paper's values; toy: the same ratios (det = seg,
    caption = 8 x det, LoRA = det / 5)."""
    name, s = setting
    lr = {
        task: _cfg(s['stage1'][task]).optim_wrapper.optimizer.lr
        for task in TASKS
    }
    lr['stage2'] = _cfg(s['stage2']).optim_wrapper.optimizer.lr
    if name == 'coco':
        assert lr == PAPER_LR
        iters = {t: _cfg(s['stage1'][t]).train_cfg.max_iters for t in TASKS}
        assert iters == dict(det=150000, seg=150000, caption=100000)
    scale = lr['det'] / PAPER_LR['det']
    for key, value in lr.items():
        assert value == pytest.approx(PAPER_LR[key] * scale), key


def test_toy_stage2_keeps_the_papers_update_budget(stage2, setting):
    """What LoRA can change in a run, lr x iterations x alpha / rank
    (AdamW moves each weight about lr per step), is the paper's in the
    toy's 300 iterations (1e-5 x 100k / 64), within 10 %."""
    from mmvfm.models.peft import lora_layers

    name, _ = setting
    cfg, model = stage2
    (layer, *_) = [m for _, m in lora_layers(model.backbone)]
    budget = (
        cfg.optim_wrapper.optimizer.lr
        * cfg.train_cfg.max_iters
        * layer.scaling
    )
    assert budget == pytest.approx(1e-5 * 100000 / 64, rel=0.1), name
