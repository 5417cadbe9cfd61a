# Copyright (c) mmvfm contributors. All rights reserved.
"""One model, several tasks: a shared backbone (and neck), one head per
task, per-task loss weights, and freezing declared in config."""

import re
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import ModuleDict
from torch import Tensor

from .base import BaseMultiTaskModel


@MODELS.register_module()
class MultiTaskModel(BaseMultiTaskModel):
    """Routes each batch to its task's head and loss.

    ``forward(inputs, data_samples, mode, task)``
    (:class:`BaseMultiTaskModel`): the multi-task loops tag every batch
    with its task (see ``MultiTaskDataPreprocessor``); the shared backbone
    (and neck) computes the features, then ``heads[task]`` computes the
    losses (keys prefixed ``'<task>.'``, e.g. ``'det.loss_cls'``, scaled by
    the task's ``loss_weight``), the predictions or the raw outputs.

    Args:
        backbone (dict): shared backbone config.
        tasks (dict): task name -> head config (a task head such as
            ``DetTaskHead`` / ``ClsTaskHead``); an optional ``loss_weight``
            key scales that task's losses.
        neck (dict, optional): shared neck config.
        freeze (dict, optional): what does not train, e.g. stage 1 "heads
            only" ``dict(backbone=True)`` or stage 2 "LoRA only"
            ``dict(trainable=[r'\\.lora_'])``. Keys:

            - ``backbone`` / ``neck`` (bool): freeze the shared parts;
            - ``heads`` (bool | list[str]): freeze all / the listed heads;
            - ``trainable`` (list[str]): regexes on parameter names; when
              given, ONLY matching parameters train (an error if none
              match).

            Frozen parameters get ``requires_grad=False`` (use
            ``TrainableOptimWrapperConstructor`` to keep them out of the
            optimizer) and frozen modules stay in eval mode, except their
            submodules that own a trainable parameter (a LoRA layer in a
            frozen backbone keeps its dropout in training).
        data_preprocessor (dict, optional): usually
            ``MultiTaskDataPreprocessor``.
        init_cfg (dict, optional): initialisation config.
    """

    FREEZE_KEYS = ('backbone', 'neck', 'heads', 'trainable')

    def __init__(
        self,
        backbone: dict,
        tasks: Dict[str, dict],
        neck: Optional[dict] = None,
        freeze: Optional[dict] = None,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg
        )
        if not tasks:
            raise ValueError('tasks: at least one task head is needed')
        self.check_task_names(list(tasks))
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.heads = ModuleDict()  # mmengine's: init_weights recurses
        self.loss_weights: Dict[str, float] = {}
        for task, cfg in tasks.items():
            cfg = dict(cfg)
            self.loss_weights[task] = float(cfg.pop('loss_weight', 1.0))
            self.heads[task] = MODELS.build(cfg)
        self._frozen_modules: List[nn.Module] = []
        self.freeze_cfg = dict(freeze or {})
        self._apply_freeze(self.freeze_cfg)
        self._check_patch_padding()
        self._check_head_inputs()

    def _check_head_inputs(self) -> None:
        """The trunk's features fit every head's first layers: one forward
        of a small blank image through the backbone, the neck and each
        head's own neck (``DetTaskHead`` / ``ClsTaskHead``) or detector neck
        (``DetectorTaskHead``), in eval mode without gradients; a mismatch
        (a head whose in-channels differ from the trunk's) is a ValueError
        naming the task and the trunk's feature shapes. Skipped for models
        built on the meta device."""
        params = list(self.parameters())
        if not params or any(p.is_meta for p in params):
            return
        size = max(64, self._input_multiple())
        x = params[0].new_zeros(1, 3, size, size)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.extract_feat(x)
                for task, head in self.heads.items():
                    check = getattr(head, 'check_inputs', None)
                    if check is None:
                        continue
                    try:
                        check(feats)
                    except (RuntimeError, AssertionError, ValueError) as e:
                        shapes = [
                            tuple(f.shape)
                            for f in (
                                feats
                                if isinstance(feats, (list, tuple))
                                else [feats]
                            )
                        ]
                        raise ValueError(
                            f"tasks.{task}: the trunk's features {shapes} "
                            f'do not fit the head: {e}'
                        ) from None
        finally:
            self.train(was_training)

    def _input_multiple(self) -> int:
        """Patch x the neck's largest stride ratio (1 without a patch
        embedding)."""
        proj = getattr(
            getattr(self.backbone, 'patch_embed', None), 'projection', None
        )
        stride = getattr(proj, 'stride', None)
        if not stride:
            return 1
        patch = max(int(s) for s in stride)
        ratio = max(getattr(self.neck, 'strides', None) or [1])
        return int(round(patch * ratio))

    def _check_patch_padding(self) -> None:
        """A patch-embedding backbone (mmpretrain's ViT) pads its input to
        a multiple of the patch silently, and a pyramid neck needs its map
        to halve evenly: every task's ``pad_size_divisor`` must be a
        multiple of patch x the neck's largest stride ratio (ValueError
        naming the task and the numbers)."""
        proj = getattr(
            getattr(self.backbone, 'patch_embed', None), 'projection', None
        )
        stride = getattr(proj, 'stride', None)
        if not stride:
            return
        patch = max(int(s) for s in stride)
        ratio = max(getattr(self.neck, 'strides', None) or [1])
        need = int(round(patch * ratio))
        preprocessors = getattr(self.data_preprocessor, 'preprocessors', {})
        for task, pre in preprocessors.items():
            divisor = getattr(pre, 'pad_size_divisor', None)
            if divisor is not None and divisor % need:
                raise ValueError(
                    f'data_preprocessor.preprocessors.{task}.pad_size_divisor'
                    f"={divisor} is not a multiple of the backbone's patch "
                    f"({patch}) x the neck's largest stride ratio ({ratio:g})"
                    f' = {need}: the ViT would pad its input silently and '
                    f'the pyramid would not halve evenly; use {need} (or a '
                    'multiple)'
                )

    # ------------------------------------------------------------------
    @property
    def tasks(self) -> List[str]:
        return list(self.heads.keys())

    def loss_weight(self, task: str) -> float:
        return self.loss_weights[task]

    def task_uses_collective(self, task: str) -> bool:
        """Whether ``task``'s head communicates across ranks (its
        ``uses_collective``)."""
        return bool(getattr(self.heads[task], 'uses_collective', False))

    def _apply_freeze(self, freeze: dict) -> None:
        unknown = set(freeze) - set(self.FREEZE_KEYS)
        if unknown:
            raise KeyError(
                f'freeze: unknown keys {sorted(unknown)} '
                f'(known: {self.FREEZE_KEYS})'
            )
        frozen: List[nn.Module] = []
        if freeze.get('backbone'):
            frozen.append(self.backbone)
        if freeze.get('neck'):
            if self.neck is None:
                raise ValueError('freeze.neck: the model has no neck')
            frozen.append(self.neck)
        heads = freeze.get('heads', False)
        if heads is True:
            heads = self.tasks
        for task in heads or []:
            if task not in self.heads:
                raise KeyError(
                    f'freeze.heads: no task {task!r} (tasks: {self.tasks})'
                )
            frozen.append(self.heads[task])
        for module in frozen:
            module.requires_grad_(False)
        self._frozen_modules = frozen
        patterns = freeze.get('trainable')
        if patterns:
            regexes = [re.compile(p) for p in patterns]
            matched = 0
            for name, param in self.named_parameters():
                train = any(r.search(name) for r in regexes)
                param.requires_grad_(train)
                matched += train
            if not matched:
                raise ValueError(
                    f'freeze.trainable: {list(patterns)} matches no parameter'
                )

    def init_weights(self) -> None:
        """mmengine's init, after checking every ``Pretrained`` init_cfg's
        checkpoint against its module's keys (mmengine loads those
        non-strictly and only logs a mismatch): a ValueError names the
        first missing / unexpected keys. ``lora_*`` keys may be missing."""
        from ..common import check_pretrained_keys, pretrained_inits

        for name, module, cfg in pretrained_inits(self):
            check_pretrained_keys(
                module,
                cfg['checkpoint'],
                cfg.get('prefix'),
                cfg.get('map_location', 'cpu'),
                where=name or type(self).__name__,
            )
        super().init_weights()

    def train(self, mode: bool = True) -> 'MultiTaskModel':
        """Train mode, but frozen modules stay in eval mode (their
        BatchNorm statistics and dropout do not change), except submodules
        that own a trainable parameter, e.g. LoRA layers made trainable by
        ``freeze.trainable`` (their dropout must stay on)."""
        super().train(mode)
        for module in self._frozen_modules:
            module.train(False)
            for sub in module.modules():
                if any(p.requires_grad for p in sub.parameters(recurse=False)):
                    sub.train(mode)
        return self

    # ------------------------------------------------------------------
    def extract_feat(self, inputs: Tensor):
        """Shared features: ``backbone(inputs)`` then the shared neck."""
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        return feats

    def task_loss(self, inputs: Tensor, data_samples, task: str) -> dict:
        return self.heads[task].loss(self.extract_feat(inputs), data_samples)

    def predict(self, inputs: Tensor, data_samples, task: str) -> list:
        return self.heads[task].predict(
            self.extract_feat(inputs), data_samples
        )

    def _forward(self, inputs: Tensor, data_samples, task: str):
        return self.heads[task](self.extract_feat(inputs))
