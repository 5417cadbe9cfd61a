# Copyright (c) mmvfm contributors. All rights reserved.
"""The Uni-Perceiver v2 ablation configs differ in exactly the paper's
ablated settings: sampling (with the collectives it rules out: the
retrieval gather, the proposal stage's synchronised normalisers) and the
optimizer; the R50
COCO config's proposal detector is mmdet's DINO-4scale R50."""

import os.path as osp

from conftest import REPO_ROOT
from mmengine.config import Config

from mmvfm.utils import resolve_config_path

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

ADAMW = osp.join(
    REPO_ROOT,
    'configs/uniperceiver_v2/'
    'uniperceiver-v2_vit-t8_five-tasks_adamw_1xb32-1500i_toy-coco.py',
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
        'model.proposer.sync_normalizers',
        'custom_hooks',
    }
    assert ablated <= differ
    rest = {k for k in differ - ablated if not k.startswith('optim_wrapper.')}
    assert rest == set(), rest
    assert a['train_cfg.strategy'] == 'unmixed'
    assert b['train_cfg.strategy'] == 'mixed'
    assert a['model.tasks.retrieval.gather'] is True
    assert b['model.tasks.retrieval.gather'] is False
    assert a.get('model.proposer.sync_normalizers', True) is True
    assert b['model.proposer.sync_normalizers'] is False
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


def _differ(a: str, b: str) -> set:
    x = _flat(Config.fromfile(a).to_dict())
    y = _flat(Config.fromfile(b).to_dict())
    return {
        k for k in set(x) | set(y) if x.get(k, 'unset') != y.get(k, 'unset')
    }


def test_optimizer_arm_sits_between_the_pair():
    """unmixed + gather + AdamW: the mixed baseline but for the sampling
    (and its collectives), the unmixed config but for the optimizer."""
    assert _differ(MIXED, ADAMW) - {'custom_hooks'} == {
        'train_cfg.strategy',
        'model.tasks.retrieval.gather',
        'model.proposer.sync_normalizers',
    }
    # the one other difference only logs (the update sizes of issue 30)
    assert Config.fromfile(MIXED).custom_hooks == []
    assert [h['type'] for h in Config.fromfile(ADAMW).custom_hooks] == [
        'UpdateSizeHook'
    ]
    rest = _differ(UNMIXED, ADAMW) - {
        'custom_hooks',
        # unset in the unmixed config: the default, True
        'model.proposer.sync_normalizers',
    }
    assert rest and all(k.startswith('optim_wrapper.') for k in rest), rest
    adamw = Config.fromfile(ADAMW)
    assert adamw.model.proposer.sync_normalizers is True
    assert adamw.optim_wrapper.optimizer.type == 'AdamW'


def test_r50_proposer_is_mmdet_dino_4scale():
    """The R50 COCO config writes DINO out (a second ``_base_`` would clash
    on ``model`` and the dataloaders): it must stay mmdet's DINO-4scale R50
    but for the one foreground class and MaskDINO's 300 queries."""
    ours = Config.fromfile(
        osp.join(
            REPO_ROOT,
            'configs/uniperceiver_v2/'
            'uniperceiver-v2_r50-maskdino_8x-multitask-90ki_coco-in1k-'
            'caption.py',
        )
    ).model.proposer.detector.to_dict()
    dino = Config.fromfile(
        resolve_config_path('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py')
    ).model.to_dict()
    # the backbone and data preprocessor are the whole model's
    for key in ('backbone', 'data_preprocessor'):
        dino.pop(key)
    assert (ours['num_queries'], dino['num_queries']) == (300, 900)
    assert ours['bbox_head'].pop('num_classes') == 1
    dino['bbox_head'].pop('num_classes')
    ours.pop('num_queries'), dino.pop('num_queries')
    assert _flat(ours) == _flat(dino)
