# Copyright (c) mmvfm contributors. All rights reserved.
"""A detector wrapper: a trainable student, a frozen teacher, feature losses.

Three things are configured separately:

- *what to record*: ``recorders``, named pairs of module paths in the
  student and the teacher (``'neck.fpn_convs.2.conv'``, ``'neck[2]'``);
- *which loss to compute*: ``distill_losses``, any loss modules registered
  in mmdet's ``MODELS`` whose ``forward`` takes ``preds_S`` and ``preds_T``
  (and, if it wants them, ``gt_bboxes``, ``batch_img_metas``,
  ``data_samples``, which the distiller passes from the batch);
- *which recording feeds which loss*: ``loss_inputs``.

Everything is checked when the model is built: module paths, output
indices against the neck's level count, loss names, loss signatures, the
teacher checkpoint, and the init-from-teacher shapes.

The teacher is frozen: ``requires_grad=False``, kept in eval mode through
``train()``, run under ``no_grad`` and, when every teacher recording lies in
its backbone or neck, only through ``extract_feat``. Validation and test run
the student alone; attributes the distiller lacks are read from the
student (``model.bbox_head`` for mmdet's hooks). Use
``TrainableOptimWrapperConstructor`` to keep the teacher's parameters out
of the optimizer.
"""

import copy
import inspect
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config, ConfigDict
from mmengine.model import BaseModel
from mmengine.runner.checkpoint import load_checkpoint
from torch import Tensor

from mmvfm.utils import drop_pretrained, load_config

from .recorder import build_recorders

# Arguments a distillation loss may ask for besides preds_S and preds_T.
BATCH_ARGS = ('gt_bboxes', 'batch_img_metas', 'data_samples')
ModelCfg = Union[dict, ConfigDict, Config, str]


def _teacher_model_cfg(teacher: ModelCfg) -> dict:
    """A teacher model config from a dict, a file or an ``mmdet::`` path."""
    if isinstance(teacher, str):
        cfg = load_config(teacher)
        if 'model' not in cfg:
            raise KeyError(f'teacher config "{teacher}" has no `model`')
        return copy.deepcopy(cfg.model)
    if isinstance(teacher, Config):
        return copy.deepcopy(teacher.model)
    if isinstance(teacher, dict):
        return copy.deepcopy(teacher)
    raise TypeError(
        'teacher must be a model config dict or a config path, got '
        f'{type(teacher).__name__}'
    )


def _is_local_path(path: str) -> bool:
    return '://' not in path


@MODELS.register_module()
class SingleTeacherDistiller(BaseModel):
    """Feature distillation from one frozen teacher into a student detector.

    Args:
        student (dict): the student detector's config.
        teacher (dict | str): the teacher detector's model config, or a
            config file / ``'mmdet::...'`` path whose ``model`` is used.
        teacher_ckpt (str, optional): the teacher's weights (path or URL).
            Required unless ``allow_untrained_teacher=True``.
        recorders (dict): ``name -> dict(student=SOURCE, teacher=SOURCE)``
            where SOURCE is a module path, optionally with an output index
            (``'neck[0]'``).
        distill_losses (dict): ``loss_name -> loss config``. Each name must
            contain ``'loss'`` (mmengine back-propagates only such keys).
        loss_inputs (dict): ``loss_name -> recorder name``: the loss gets
            ``preds_S``/``preds_T`` from that recorder's student/teacher.
        init_student (bool): after the student's own ``init_weights``, copy
            the teacher's weights of ``init_student_modules`` into the
            student (shapes and keys must match exactly).
        init_student_modules (Sequence[str], optional): top-level student
            modules to copy; default: all but ``backbone`` and
            ``data_preprocessor`` (as the FGD reference code).
        teacher_forward (str): ``'auto'`` (``extract_feat`` when every
            teacher recording lies in the backbone or neck, else the
            teacher's ``_forward``), ``'extract_feat'`` or ``'tensor'``.
        allow_untrained_teacher (bool): build without ``teacher_ckpt``
            (tests, smoke runs). The teacher is then initialised by its own
            ``init_cfg``s with every ``Pretrained`` one dropped (no
            downloads), as an untrained detector of its config would be.
            Defaults to False.
        data_preprocessor (dict, optional): defaults to the student's.
        init_cfg (dict, optional): unused; weights come from the student's
            own init and from ``teacher_ckpt``.
    """

    def __init__(
        self,
        student: dict,
        teacher: ModelCfg,
        recorders: Dict[str, dict],
        distill_losses: Dict[str, dict],
        loss_inputs: Dict[str, str],
        teacher_ckpt: Optional[str] = None,
        init_student: bool = False,
        init_student_modules: Optional[Sequence[str]] = None,
        teacher_forward: str = 'auto',
        allow_untrained_teacher: bool = False,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        student_model = MODELS.build(student)
        if data_preprocessor is None:
            data_preprocessor = student_model.data_preprocessor
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg
        )
        self.student = student_model

        # ---- teacher: built, loaded, frozen -------------------------------
        teacher_cfg = _teacher_model_cfg(teacher)
        self.teacher_ckpt = teacher_ckpt
        if teacher_ckpt is None:
            if not allow_untrained_teacher:
                raise ValueError(
                    'teacher_ckpt is required: a distiller with an '
                    'untrained teacher teaches nothing. Pass '
                    '--cfg-options model.teacher_ckpt=PATH (or set '
                    'allow_untrained_teacher=True for smoke tests)'
                )
            # initialised in init_weights by its own init_cfgs, without
            # the pretrained backbone downloads
            drop_pretrained(teacher_cfg)
        self.teacher = MODELS.build(teacher_cfg)
        if teacher_ckpt is not None:
            if _is_local_path(teacher_ckpt) and not osp.isfile(teacher_ckpt):
                raise FileNotFoundError(
                    f'teacher_ckpt "{teacher_ckpt}" does not exist'
                )
            load_checkpoint(
                self.teacher,
                teacher_ckpt,
                map_location='cpu',
                strict=True,
                logger='current',
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()

        # ---- what to record ----------------------------------------------
        if not recorders:
            raise ValueError('recorders: at least one is needed')
        for name, pair in recorders.items():
            if not isinstance(pair, dict) or set(pair) != {
                'student',
                'teacher',
            }:
                raise ValueError(
                    f'recorders.{name} must be dict(student=SOURCE, '
                    f'teacher=SOURCE), got {pair!r}'
                )
        self.student_recorders = build_recorders(
            self.student,
            {k: v['student'] for k, v in recorders.items()},
            'recorders',
        )
        self.teacher_recorders = build_recorders(
            self.teacher,
            {k: v['teacher'] for k, v in recorders.items()},
            'recorders',
        )
        if teacher_forward not in ('auto', 'extract_feat', 'tensor'):
            raise ValueError(
                "teacher_forward must be 'auto', 'extract_feat' or "
                f"'tensor', got {teacher_forward!r}"
            )
        in_feat = all(
            r.path.split('.')[0] in ('backbone', 'neck')
            for r in self.teacher_recorders.values()
        )
        if teacher_forward == 'extract_feat' and not in_feat:
            raise ValueError(
                "teacher_forward='extract_feat' but some teacher "
                'recordings lie outside the backbone and neck'
            )
        self.teacher_forward = (
            ('extract_feat' if in_feat else 'tensor')
            if teacher_forward == 'auto'
            else teacher_forward
        )

        # ---- which losses, fed by which recording --------------------------
        self.distill_losses = nn.ModuleDict()
        for name, loss_cfg in distill_losses.items():
            if 'loss' not in name:
                raise ValueError(
                    f'distill_losses.{name}: the name must contain "loss" '
                    '(mmengine back-propagates only such keys)'
                )
            self.distill_losses[name] = MODELS.build(loss_cfg)
        if set(loss_inputs) != set(distill_losses):
            raise ValueError(
                'loss_inputs and distill_losses must name the same losses: '
                f'only in loss_inputs {sorted(set(loss_inputs) - set(distill_losses))}, '  # noqa: E501
                f'only in distill_losses {sorted(set(distill_losses) - set(loss_inputs))}'  # noqa: E501
            )
        self.loss_inputs = dict(loss_inputs)
        self._loss_batch_args: Dict[str, List[str]] = {}
        for name, recorder in self.loss_inputs.items():
            if recorder not in recorders:
                raise KeyError(
                    f'loss_inputs.{name}: no recorder {recorder!r} (have '
                    f'{sorted(recorders)})'
                )
            self._loss_batch_args[name] = self._check_signature(
                name, self.distill_losses[name]
            )

        # ---- init from teacher ------------------------------------------
        self.init_student = init_student
        if init_student_modules is None:
            init_student_modules = [
                n
                for n, _ in self.student.named_children()
                if n not in ('backbone', 'data_preprocessor')
            ]
        self.init_student_modules = list(init_student_modules)
        if init_student:
            self._teacher_state_for_student()  # fail at build time

    # ------------------------------------------------------------------
    @staticmethod
    def _check_signature(name: str, loss: nn.Module) -> List[str]:
        """The batch arguments ``loss.forward`` asks for; an error if it
        needs anything the distiller cannot provide."""
        params = inspect.signature(loss.forward).parameters
        for arg in ('preds_S', 'preds_T'):
            if arg not in params:
                raise TypeError(
                    f'distill_losses.{name}: {type(loss).__name__}.forward '
                    f'has no argument {arg!r}'
                )
        wanted, unknown = [], []
        for arg, p in params.items():
            if arg in ('preds_S', 'preds_T', 'return_terms') or p.kind in (
                p.VAR_POSITIONAL,
                p.VAR_KEYWORD,
            ):
                continue
            if arg in BATCH_ARGS:
                wanted.append(arg)
            elif p.default is p.empty:
                unknown.append(arg)
        if unknown:
            raise TypeError(
                f'distill_losses.{name}: {type(loss).__name__}.forward '
                f'needs {unknown}, which the distiller cannot provide '
                f'(it provides preds_S, preds_T, {", ".join(BATCH_ARGS)})'
            )
        if 'return_terms' in params:
            wanted.append('return_terms')
        return wanted

    def _teacher_state_for_student(self) -> Dict[str, Tensor]:
        """The teacher's weights of ``init_student_modules``, keyed as in
        the student; ValueError naming every key or shape that differs."""
        student_sd = self.student.state_dict()
        teacher_sd = self.teacher.state_dict()
        state, problems = {}, []
        for module in self.init_student_modules:
            prefix = module + '.'
            s_keys = {k for k in student_sd if k.startswith(prefix)}
            t_keys = {k for k in teacher_sd if k.startswith(prefix)}
            if not s_keys and not t_keys:
                problems.append(f'{module}: no such module in either model')
            for k in sorted(s_keys - t_keys):
                problems.append(f'{k}: missing in the teacher')
            for k in sorted(t_keys - s_keys):
                problems.append(f'{k}: missing in the student')
            for k in sorted(s_keys & t_keys):
                if student_sd[k].shape != teacher_sd[k].shape:
                    problems.append(
                        f'{k}: student {tuple(student_sd[k].shape)} vs '
                        f'teacher {tuple(teacher_sd[k].shape)}'
                    )
                else:
                    state[k] = teacher_sd[k]
        if problems:
            raise ValueError(
                'init_student=True needs identical modules '
                f'{self.init_student_modules} in student and teacher:\n  '
                + '\n  '.join(problems[:20])
                + (
                    f'\n  ... {len(problems) - 20} more'
                    if len(problems) > 20
                    else ''
                )
            )
        return state

    def init_weights(self) -> None:
        """Initialise the student (its own ``init_cfg``s), then copy the
        teacher's modules into it if ``init_student``. The teacher keeps
        the weights of ``teacher_ckpt``; an untrained teacher
        (``teacher_ckpt=None``) is initialised first by its own
        ``init_cfg``s (PyTorch's default weights gave RetinaNet a
        ``loss_cls`` of ~1e4 through ``init_student`` and YOLOX a total
        loss of ~1e16).

        NOTE: the FGD reference code copied the teacher at build time;
        on mmdet >= 2.12 the Runner's later ``init_weights`` overwrote the
        copy (its users lost ~10 mAP). Here the copy comes last.
        """
        if self.teacher_ckpt is None:
            self.teacher.init_weights()
        self.student.init_weights()
        for loss in self.distill_losses.values():
            if hasattr(loss, 'init_weights'):
                loss.init_weights()
        if self.init_student:
            state = self._teacher_state_for_student()
            missing, unexpected = self.student.load_state_dict(
                state, strict=False
            )
            assert not unexpected, unexpected
        self._is_init = True

    def __getattr__(self, name: str):
        """Attributes the distiller lacks are read from the student, so
        mmdet hooks that reach into the detector (``model.bbox_head``, e.g.
        YOLOX's mode switch) work on the distiller too."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            student = self.__dict__.get('_modules', {}).get('student')
            if student is None:
                raise
            return getattr(student, name)

    def train(self, mode: bool = True) -> 'SingleTeacherDistiller':
        """Set train mode everywhere but in the teacher (always eval)."""
        super().train(mode)
        self.teacher.train(False)
        return self

    # ------------------------------------------------------------------
    def forward(
        self,
        inputs: Tensor,
        data_samples: Optional[List[DetDataSample]] = None,
        mode: str = 'tensor',
    ):
        """``loss``: student losses + distillation losses; ``predict`` and
        ``tensor``: the student alone."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.student(inputs, data_samples, mode=mode)

    def _run_teacher(
        self, inputs: Tensor, data_samples: List[DetDataSample]
    ) -> None:
        with torch.no_grad():
            if self.teacher_forward == 'extract_feat':
                self.teacher.extract_feat(inputs)
            else:
                self.teacher._forward(inputs, data_samples)

    def loss(
        self, inputs: Tensor, data_samples: List[DetDataSample]
    ) -> Dict[str, Tensor]:
        """Args:
            inputs (Tensor): the preprocessed batch ``[N, 3, H, W]``.
            data_samples (list[DetDataSample]): ground truth and metas.

        Returns:
            dict: the student's losses, each distillation loss under its
            name (with ``'loss'``) and, for losses that return their terms,
            each term under ``<name without 'loss_'>.<term>`` (logged, not
            back-propagated).
        """
        for recorder in (
            *self.student_recorders.values(),
            *self.teacher_recorders.values(),
        ):
            recorder.reset()
        self._run_teacher(inputs, data_samples)
        losses = self.student.loss(inputs, data_samples)

        batch = dict(
            gt_bboxes=[ds.gt_instances.bboxes for ds in data_samples],
            batch_img_metas=[ds.metainfo for ds in data_samples],
            data_samples=data_samples,
            return_terms=True,
        )
        for name, loss in self.distill_losses.items():
            recorder = self.loss_inputs[name]
            kwargs = {k: batch[k] for k in self._loss_batch_args[name]}
            out = loss(
                preds_S=self.student_recorders[recorder].get(),
                preds_T=self.teacher_recorders[recorder].get(),
                **kwargs,
            )
            if name in losses:
                raise KeyError(
                    f'distill loss {name!r} clashes with a '
                    'student loss of the same name'
                )
            if isinstance(out, dict):
                tag = name.replace('loss_', '', 1)
                for term, value in out.items():
                    losses[f'{tag}.{term}'] = value.detach()
                out = sum(out.values())
            losses[name] = out
        return losses
