# Copyright (c) mmvfm contributors. All rights reserved.
"""The incubator example: a module of one's own mixed in by config."""

import os.path as osp

import torch
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(
    REPO_ROOT,
    'projects/example_project/configs/'
    'retinanet_r18-w32_gated-fpn_1xb8-500i_toy-coco.py',
)


def test_gated_fpn_equals_fpn_untrained_and_gates_learn(monkeypatch):
    monkeypatch.syspath_prepend(REPO_ROOT)
    from mmdet.models.necks import FPN

    from projects.example_project.gated_fpn import GatedFPN

    torch.manual_seed(0)
    kwargs = dict(
        in_channels=[8, 16],
        out_channels=8,
        num_outs=3,
        add_extra_convs='on_input',
    )
    gated, plain = GatedFPN(**kwargs), FPN(**kwargs)
    plain.load_state_dict(
        {k: v for k, v in gated.state_dict().items() if k != 'gates'}
    )
    feats = (torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8))
    outs = gated(feats)
    for a, b in zip(outs, plain(feats)):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in outs).backward()
    assert gated.gates.grad is not None and gated.gates.grad.abs().sum() > 0


def test_config_mixes_the_module_in_and_trains(monkeypatch, tiny_cfg):
    from mmdet.registry import MODELS
    from mmengine.runner import Runner

    monkeypatch.syspath_prepend(REPO_ROOT)
    cfg = Config.fromfile(CONFIG)  # runs custom_imports
    assert cfg.model.neck.type == 'GatedFPN'
    assert MODELS.get('GatedFPN') is not None
    tiny = tiny_cfg(max_iters=1)
    tiny.model.neck.type = 'GatedFPN'
    tiny.val_cfg = tiny.val_dataloader = tiny.val_evaluator = None
    runner = Runner.from_cfg(tiny)
    runner.train()
    gates = runner.model.neck.gates
    assert not torch.equal(gates.detach(), torch.ones_like(gates))
