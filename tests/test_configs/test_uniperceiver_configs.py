# Copyright (c) mmvfm contributors. All rights reserved.
"""The Uni-Perceiver v2 ablation pair differs in exactly the paper's
ablated settings: sampling, the retrieval gather and the optimizer."""

import os.path as osp

from conftest import REPO_ROOT
from mmengine.config import Config

UNMIXED = osp.join(
    REPO_ROOT,
    'configs/uniperceiver_v2/'
    'uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py',
)
MIXED = osp.join(
    REPO_ROOT,
    'configs/uniperceiver_v2/'
    'uniperceiver-v2_vit-t8_five-tasks_mixed-adamw_1xb32-1500i_toy-coco.py',
)


def _flat(node, prefix=''):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: node}


def test_ablation_pair_differs_only_in_the_ablated_settings():
    a = _flat(Config.fromfile(UNMIXED).to_dict())
    b = _flat(Config.fromfile(MIXED).to_dict())
    differ = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    ablated = {
        'train_cfg.strategy',
        'model.tasks.retrieval.gather',
        'custom_hooks',
    }
    assert ablated <= differ
    rest = {k for k in differ - ablated if not k.startswith('optim_wrapper.')}
    assert rest == set(), rest
    assert a['train_cfg.strategy'] == 'unmixed'
    assert b['train_cfg.strategy'] == 'mixed'
    assert a['model.tasks.retrieval.gather'] is True
    assert b['model.tasks.retrieval.gather'] is False
    assert a['optim_wrapper.optimizer.type'] == 'MTAdamW'
    assert b['optim_wrapper.optimizer.type'] == 'AdamW'
    for key in ('lr', 'weight_decay'):
        assert (
            a[f'optim_wrapper.optimizer.{key}']
            == b[f'optim_wrapper.optimizer.{key}']
        )
    assert (
        a['optim_wrapper.paramwise_cfg.custom_keys.logit_scale.decay_mult']
        == (
            b['optim_wrapper.paramwise_cfg.custom_keys.logit_scale.decay_mult']
        )
    )
