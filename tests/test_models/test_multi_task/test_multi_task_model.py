# Copyright (c) mmvfm contributors. All rights reserved.
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper


@pytest.fixture
def model_cfg(tiny_mt_cfg):
    return copy.deepcopy(tiny_mt_cfg().model)


def _batch(cfg, task, n=2):
    from mmdet.registry import DATASETS

    ds = DATASETS.build(cfg.train_dataloader[task].dataset)
    return dict(pseudo_collate([ds[i] for i in range(n)]), task=task)


def test_routes_each_task_to_its_head(tiny_mt_cfg):
    cfg = tiny_mt_cfg()
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    det = model.data_preprocessor(_batch(cfg, 'det'), True)
    cls = model.data_preprocessor(_batch(cfg, 'cls'), True)
    assert det['task'] == 'det' and cls['task'] == 'cls'
    assert det['inputs'].shape[-1] % 32 == 0  # det padding
    det_losses = model(**det, mode='loss')
    cls_losses = model(**cls, mode='loss')
    assert set(det_losses) == {'det.loss_cls', 'det.loss_bbox'}
    assert set(cls_losses) == {'cls.loss'}
    # a classification step gives no gradient to the detection head
    cls_losses['cls.loss'].backward()
    assert all(p.grad is None for p in model.heads.det.parameters())
    assert any(p.grad is not None for p in model.heads.cls.parameters())
    model.eval()
    with torch.no_grad():
        det_pred = model(
            **model.data_preprocessor(_batch(cfg, 'det')), mode='predict'
        )
        cls_pred = model(
            **model.data_preprocessor(_batch(cfg, 'cls')), mode='predict'
        )
    assert 'pred_instances' in det_pred[0]
    assert cls_pred[0].pred_score.shape == (5,)


def test_loss_weight_scales_the_task(tiny_mt_cfg):
    cfg = tiny_mt_cfg()
    torch.manual_seed(0)
    plain = MODELS.build(cfg.model)
    cfg.model.tasks.cls.loss_weight = 0.5
    weighted = MODELS.build(cfg.model)
    weighted.load_state_dict(plain.state_dict())
    batch = plain.data_preprocessor(_batch(cfg, 'cls'), True)
    a = plain(**batch, mode='loss')['cls.loss']
    b = weighted(**batch, mode='loss')['cls.loss']
    torch.testing.assert_close(b, 0.5 * a)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_heads_only_and_pattern_only(model_cfg):
    stage1 = MODELS.build(dict(model_cfg, freeze=dict(backbone=True)))
    names = _trainable(stage1)
    assert names and all(n.startswith('heads.') for n in names)
    stage1.train()
    assert not stage1.backbone.training  # BN statistics frozen too
    assert stage1.heads.training

    stage2 = MODELS.build(
        dict(model_cfg, freeze=dict(trainable=[r'^heads\.cls\.head\.fc\.']))
    )
    assert _trainable(stage2) == {
        'heads.cls.head.fc.weight',
        'heads.cls.head.fc.bias',
    }

    heads = MODELS.build(dict(model_cfg, freeze=dict(heads=['det'])))
    assert not any(n.startswith('heads.det.') for n in _trainable(heads))
    assert any(n.startswith('backbone.') for n in _trainable(heads))


@pytest.mark.parametrize(
    'freeze,error,match',
    [
        (dict(trainable=['lora_']), ValueError, 'matches no parameter'),
        (dict(heads=['seg']), KeyError, "no task 'seg'"),
        (dict(backbones=True), KeyError, 'unknown keys'),
        (dict(neck=True), ValueError, 'has no neck'),
    ],
)
def test_bad_freeze(model_cfg, freeze, error, match):
    with pytest.raises(error, match=match):
        MODELS.build(dict(model_cfg, freeze=freeze))


@pytest.mark.parametrize('paramwise', [None, dict(norm_decay_mult=0.0)])
def test_optimizer_holds_exactly_the_unfrozen_parameters(model_cfg, paramwise):
    for freeze in (dict(backbone=True), dict(trainable=[r'^heads\.cls\.'])):
        model = MODELS.build(dict(model_cfg, freeze=freeze))
        cfg = dict(
            constructor='TrainableOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        )
        if paramwise:
            cfg['paramwise_cfg'] = paramwise
        wrapper = build_optim_wrapper(model, cfg)
        in_optim = {
            id(p) for g in wrapper.optimizer.param_groups for p in g['params']
        }
        expected = {id(p) for p in model.parameters() if p.requires_grad}
        assert in_optim == expected


def test_task_is_required(tiny_mt_cfg):
    cfg = tiny_mt_cfg()
    model = MODELS.build(cfg.model)
    batch = _batch(cfg, 'cls')
    with pytest.raises(KeyError, match="no 'task'"):
        model.data_preprocessor(
            {k: v for k, v in batch.items() if k != 'task'}
        )
    data = model.data_preprocessor(batch)
    with pytest.raises(ValueError, match='needs the task'):
        model(data['inputs'], data['data_samples'], mode='loss')
    with pytest.raises(KeyError, match="no head for task 'seg'"):
        model(data['inputs'], data['data_samples'], mode='loss', task='seg')
