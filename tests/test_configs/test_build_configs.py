# Copyright (c) mmvfm contributors. All rights reserved.
"""Every config under configs/ and projects/*/configs/ loads and builds."""

import os.path as osp
import sys

import pytest
import torch
from conftest import ALL_CONFIGS as CONFIGS
from conftest import REPO_ROOT
from mmengine.config import Config


def test_configs_are_found():
    assert any('configs/toy/' in p for p in CONFIGS)
    assert any('projects/example_project' in p for p in CONFIGS)


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[osp.relpath(p, REPO_ROOT) for p in CONFIGS]
)
def test_build_config(path, monkeypatch):
    from mmdet.registry import MODELS

    from mmvfm.utils import drop_pretrained, register_all_modules

    monkeypatch.syspath_prepend(REPO_ROOT)  # projects.* custom imports
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config.fromfile(path)
    register_all_modules(init_default_scope=True)
    drop_pretrained(cfg.model)
    if cfg.model.get('type') == 'SingleTeacherDistiller':
        # no download of the teacher's weights; the teacher config is
        # still resolved and built
        cfg.model.teacher_ckpt = None
        cfg.model.allow_untrained_teacher = True
    # Heavy backbones are built without allocating their weights; a module
    # that reads a tensor's value while it is built (mmdet's Swin: the
    # drop-path rates of torch.linspace(...).item()) is built on the CPU.
    try:
        with torch.device('meta'):
            model = MODELS.build(cfg.model)
    except RuntimeError as err:
        if 'meta tensors' not in str(err):
            raise
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    for key in (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
        'val_evaluator',
        'optim_wrapper',
        'train_cfg',
    ):
        assert key in cfg, f'{osp.relpath(path, REPO_ROOT)} lacks {key}'
    assert 'projects' in sys.modules or 'projects' not in path
