# Copyright (c) mmvfm contributors. All rights reserved.
"""The configs of configs/gqpos/: every toy config trains and validates
with the Runner on the tiny toy set; the GQPos configs differ from their
stock base only by the GQPos switch."""

import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmvfm.utils import load_config

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
CFG_DIR = osp.join(REPO_ROOT, 'configs', 'gqpos')
TOY_CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, '*_toy-coco.py')))
GQPOS_CONFIGS = sorted(glob.glob(osp.join(CFG_DIR, 'gqpos_*.py')))
SWITCH = {'type', 'gqpos'}


# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


def _plain(cfg):
    """A config value as plain dicts / lists, without the ``_scope_`` keys
    mmengine adds to what an ``mmdet::`` base defines."""
    if isinstance(cfg, dict):
        return {k: _plain(v) for k, v in cfg.items() if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _ids(paths):
    return [osp.basename(p)[:-3] for p in paths]


def test_configs_found():
    names = _ids(TOY_CONFIGS)
    for target in ('detr', 'conditional-detr', 'deformable-detr'):
        assert any(n.startswith(target + '_') for n in names)
        assert any(n.startswith(f'gqpos_{target}_') for n in names)
    assert len([p for p in GQPOS_CONFIGS if p.endswith('_coco.py')]) == 4


@pytest.mark.parametrize('path', GQPOS_CONFIGS, ids=_ids(GQPOS_CONFIGS))
def test_gqpos_config_is_base_plus_switch(path, monkeypatch):
    """``type`` and ``gqpos`` are the only model fields that change."""
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config.fromfile(path)
    with open(path) as f:
        base = f.read().split("_base_ = '", 1)[1].split("'", 1)[0]
    if not base.startswith('mmdet::'):
        base = osp.join(CFG_DIR, base)
    stock = load_config(base)
    assert cfg.model.type.startswith('GQPos')
    assert cfg.model.type[len('GQPos') :] == stock.model.type
    assert isinstance(cfg.model.gqpos, dict)
    assert 'gqpos' not in stock.model
    model = {k: v for k, v in _plain(cfg.model).items() if k not in SWITCH}
    stock_model = {
        k: v for k, v in _plain(stock.model).items() if k not in SWITCH
    }
    assert model == stock_model
    for key in ('train_dataloader', 'optim_wrapper', 'train_cfg'):
        assert _plain(cfg[key]) == _plain(stock[key])
    assert 'mmvfm' in cfg.custom_imports['imports']


def tiny_toy_cfg(path: str, toy_root: str, work_dir: str, name: str):
    """A toy config on the tiny toy set: 64 px, batch 2, no workers, 2
    iterations then one validation pass on 4 images, constant learning
    rate."""
    from conftest import shrink_toy_run

    cfg = Config.fromfile(path)
    root = shrink_toy_run(cfg, toy_root, work_dir, name, 2, 2, val_images=4)
    ann_val = root + 'annotations/instances_val.json'
    cfg.merge_from_dict(
        {'val_evaluator.ann_file': ann_val, 'test_evaluator.ann_file': ann_val}
    )
    return cfg


@pytest.mark.parametrize('path', TOY_CONFIGS, ids=_ids(TOY_CONFIGS))
def test_toy_config_train_val(path, toy_root, tmp_path):
    from mmengine.runner import Runner

    name = 'gqpos_' + osp.basename(path)[:-3]
    cfg = tiny_toy_cfg(path, toy_root, str(tmp_path / name), name)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    assert runner.iter == 2
    with_gqpos = getattr(model, 'gqpos', None) is not None
    assert with_gqpos == osp.basename(path).startswith('gqpos_')
    if with_gqpos:
        # the guide is optimised and stayed finite
        optimised = {
            id(p)
            for group in runner.optim_wrapper.optimizer.param_groups
            for p in group['params']
        }
        for p in model.gqpos.parameters():
            assert id(p) in optimised
            assert torch.isfinite(p).all()
    scalars = runner.message_hub.log_scalars
    assert 'val/coco/bbox_mAP' in scalars, sorted(scalars)
