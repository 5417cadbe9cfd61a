# Copyright (c) mmvfm contributors. All rights reserved.
"""SingleTeacherDistiller: build-time checks and training guards."""

import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmvfm.models.distillers import SingleTeacherDistiller


@MODELS.register_module(force=True)
class _SquaredDiffLoss(nn.Module):
    """Test loss: mean squared difference, and its terms."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, preds_S, preds_T, gt_bboxes, return_terms=False):
        assert len(gt_bboxes) == preds_S.shape[0]
        value = self.weight * (preds_S - preds_T).pow(2).mean()
        return dict(sq=value) if return_terms else value


LEVELS = [0, 1, 2, 3, 4]


def distiller_cfg(model_cfg: dict, teacher_ckpt=None, **overrides) -> dict:
    """A distiller of a toy RetinaNet into itself, FPN levels 0-4."""
    cfg = dict(
        type='SingleTeacherDistiller',
        student=copy.deepcopy(model_cfg),
        teacher=copy.deepcopy(model_cfg),
        teacher_ckpt=teacher_ckpt,
        allow_untrained_teacher=teacher_ckpt is None,
        recorders={
            f'fpn_{i}': dict(
                student=f'neck.fpn_convs.{i}.conv',
                teacher=f'neck.fpn_convs.{i}.conv',
            )
            for i in LEVELS
        },
        distill_losses={
            f'loss_sq_fpn_{i}': dict(type='_SquaredDiffLoss') for i in LEVELS
        },
        loss_inputs={f'loss_sq_fpn_{i}': f'fpn_{i}' for i in LEVELS},
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture
def teacher_ckpt(tiny_cfg, tmp_path):
    """A 'trained' teacher: a randomly initialised toy RetinaNet, saved."""
    torch.manual_seed(1)
    teacher = MODELS.build(tiny_cfg().model)
    teacher.init_weights()
    path = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, path)
    return path


def test_teacher_loaded_and_frozen(tiny_cfg, teacher_ckpt):
    model = MODELS.build(distiller_cfg(tiny_cfg().model, teacher_ckpt))
    saved = torch.load(teacher_ckpt)['state_dict']
    for k, v in model.teacher.state_dict().items():
        torch.testing.assert_close(v, saved[k])
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert model.training and model.student.training
    assert not model.teacher.training
    assert model.teacher_forward == 'extract_feat'


def test_untrained_teacher_is_initialised_without_downloads(tiny_cfg):
    """allow_untrained_teacher: the teacher gets its own init_cfg (here
    RetinaNet's focal-loss prior on the class bias, which init_student then
    copies), and a Pretrained backbone init_cfg is dropped, not fetched."""
    model_cfg = tiny_cfg().model
    teacher = copy.deepcopy(model_cfg)
    teacher.backbone.init_cfg = dict(
        type='Pretrained', checkpoint='https://example.invalid/r18.pth'
    )
    model = MODELS.build(
        distiller_cfg(model_cfg, teacher=teacher, init_student=True)
    )
    assert 'Pretrained' not in str(model.teacher.backbone.init_cfg)
    model.init_weights()  # would fail on the Pretrained download
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    for m in (model.teacher, model.student):
        bias = m.bbox_head.retina_cls.bias
        torch.testing.assert_close(bias, torch.full_like(bias, prior.item()))


@pytest.mark.parametrize(
    'override,error,match',
    [
        (
            dict(
                recorders={
                    'fpn_0': dict(
                        student='neck.fpn_conv.0.conv',
                        teacher='neck.fpn_convs.0.conv',
                    )
                }
            ),
            KeyError,
            "recorders.fpn_0: module 'neck.fpn_conv.0.conv' not found; "
            'did you mean',
        ),
        (
            dict(
                recorders={'fpn_0': dict(student='neck[7]', teacher='neck[7]')}
            ),
            IndexError,
            "output 7 of 'neck', which has 5 outputs",
        ),
        (
            dict(
                distill_losses={'sq_fpn_0': dict(type='_SquaredDiffLoss')},
                loss_inputs={'sq_fpn_0': 'fpn_0'},
            ),
            ValueError,
            'must contain "loss"',
        ),
        (
            dict(loss_inputs={'loss_sq_fpn_0': 'fpn_9'}),
            ValueError,
            'must name the same losses',
        ),
        (
            dict(allow_untrained_teacher=False),
            ValueError,
            'teacher_ckpt is required',
        ),
        (
            dict(teacher_ckpt='missing/teacher.pth'),
            FileNotFoundError,
            'teacher_ckpt "missing/teacher.pth" does not exist',
        ),
        (
            dict(teacher='configs/none/teacher.py'),
            FileNotFoundError,
            'config file "configs/none/teacher.py" does not exist',
        ),
        (
            dict(
                teacher_forward='extract_feat',
                recorders={
                    f'fpn_{i}': dict(
                        student=f'bbox_head.cls_convs.{i % 2}',
                        teacher=f'bbox_head.cls_convs.{i % 2}',
                    )
                    for i in LEVELS
                },
            ),
            ValueError,
            'outside the backbone and neck',
        ),
    ],
)
def test_bad_configs_fail_at_build_time(tiny_cfg, override, error, match):
    with pytest.raises(error, match=match):
        MODELS.build(distiller_cfg(tiny_cfg().model, **override))


def test_loss_signature_is_checked(tiny_cfg):
    @MODELS.register_module(force=True)
    class _NeedsLabels(nn.Module):
        def forward(self, preds_S, preds_T, gt_labels):
            return preds_S.sum()

    cfg = distiller_cfg(
        tiny_cfg().model,
        distill_losses={'loss_x': dict(type='_NeedsLabels')},
        loss_inputs={'loss_x': 'fpn_0'},
    )
    with pytest.raises(TypeError, match=r"needs \['gt_labels'\]"):
        MODELS.build(cfg)


def test_init_student_shape_mismatch_names_keys(tiny_cfg):
    model_cfg = tiny_cfg().model
    student = copy.deepcopy(model_cfg)
    student['neck']['out_channels'] = 16
    student['bbox_head']['in_channels'] = 16
    cfg = distiller_cfg(model_cfg, student=student, init_student=True)
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg)
    msg = str(err.value)
    assert (
        'neck.fpn_convs.0.conv.weight: student (16, 16, 3, 3) vs '
        'teacher (32, 32, 3, 3)' in msg
    )


def test_heads_forward_uses_full_teacher(tiny_cfg):
    cfg = distiller_cfg(
        tiny_cfg().model,
        recorders={
            'cls': dict(
                student='bbox_head.retina_cls', teacher='bbox_head.retina_cls'
            )
        },
        distill_losses={'loss_cls_kd': dict(type='_SquaredDiffLoss')},
        loss_inputs={'loss_cls_kd': 'cls'},
    )
    model = MODELS.build(cfg)
    assert model.teacher_forward == 'tensor'


class _Probe(Hook):
    """Records what the guards below assert, at the right moments."""

    def before_train(self, runner):
        model = runner.model
        self.init_equal = {
            k: torch.equal(v, model.teacher.state_dict()[k])
            for k, v in model.student.state_dict().items()
            if k.startswith(('neck.', 'bbox_head.'))
        }
        self.teacher_before = copy.deepcopy(model.teacher.state_dict())
        self.param_ids = {
            id(p)
            for g in runner.optim_wrapper.optimizer.param_groups
            for p in g['params']
        }

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ):
        self.outputs = outputs


def test_runner_guards(tiny_cfg, teacher_ckpt):
    """init_student copies after the Runner's init; teacher BN statistics
    and weights unchanged by training; the optimizer holds no teacher
    parameter; distillation losses and their terms logged."""
    cfg = tiny_cfg(max_iters=2)
    cfg.model = distiller_cfg(cfg.model, teacher_ckpt, init_student=True)
    cfg.optim_wrapper.constructor = 'TrainableOptimWrapperConstructor'
    cfg.find_unused_parameters = True
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    probe = _Probe()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(probe)
    runner.train()
    model = runner.model

    assert probe.init_equal and all(probe.init_equal.values())
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, probe.teacher_before[k]), k
    assert any('running_mean' in k for k in probe.teacher_before)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    student_ids = {id(p) for p in model.student.parameters()}
    assert not probe.param_ids & teacher_ids
    assert student_ids <= probe.param_ids
    for i in LEVELS:
        assert f'loss_sq_fpn_{i}' in probe.outputs
        assert f'sq_fpn_{i}.sq' in probe.outputs
    # the student moved away from the copied teacher weights
    assert not torch.equal(
        model.student.bbox_head.retina_cls.weight,
        model.teacher.bbox_head.retina_cls.weight,
    )


def test_predict_runs_the_student_alone(tiny_cfg, toy_root):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    cfg = tiny_cfg()
    model = MODELS.build(distiller_cfg(cfg.model))
    model.init_weights()
    model.eval()
    calls = []
    model.teacher.register_forward_pre_hook(lambda *a: calls.append(1))
    model.teacher.backbone.register_forward_pre_hook(
        lambda *a: calls.append(1)
    )
    ds = DATASETS.build(cfg.val_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), False)
    with torch.no_grad():
        preds = model(**batch, mode='predict')
        same = model.student(**batch, mode='predict')
    assert not calls
    assert len(preds) == 2
    torch.testing.assert_close(
        preds[0].pred_instances.scores, same[0].pred_instances.scores
    )
    # attributes the distiller lacks come from the student
    assert model.bbox_head is model.student.bbox_head


def test_registered():
    assert MODELS.get('SingleTeacherDistiller') is SingleTeacherDistiller
    assert osp.isfile(__file__)
