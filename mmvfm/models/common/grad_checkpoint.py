# Copyright (c) mmvfm contributors. All rights reserved.
"""Activation (gradient) checkpointing for any submodules, by regex.

mmpretrain's ``VisionTransformer`` has no ``with_cp``. Instead of forking
its forward, :func:`enable_gradient_checkpointing` switches each matching
submodule (e.g. every ``layers.<i>`` block) to a subclass of its own class
whose ``forward`` runs the original one under
``torch.utils.checkpoint.checkpoint`` (non-reentrant, RNG state preserved:
dropout masks are replayed, so the gradients equal those without
checkpointing). Module names, parameters, checkpoint keys and
``isinstance`` checks do not change, and ``copy.deepcopy`` keeps working.
Only training forwards with gradients are checkpointed; evaluation runs the
plain forward.

Config builder: ``dict(type='GradientCheckpointing', module=dict(...),
pattern=r'layers\\.\\d+')`` returns the built module itself (nestable with
``type='LoRA'``).
"""

import re
from typing import Dict, List

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from torch.utils.checkpoint import checkpoint

_CLASSES: Dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """``cls`` with a checkpointed forward (one subclass per class)."""
    if getattr(cls, '_mmvfm_checkpointed', False):
        return cls
    if cls not in _CLASSES:

        def forward(self, *args, **kwargs):
            plain = super(new_cls, self).forward
            if self.training and torch.is_grad_enabled():
                return checkpoint(plain, *args, use_reentrant=False, **kwargs)
            return plain(*args, **kwargs)

        new_cls = type(
            cls.__name__,
            (cls,),
            dict(
                forward=forward,
                _mmvfm_checkpointed=True,
                __module__=cls.__module__,
                __doc__=cls.__doc__,
            ),
        )
        _CLASSES[cls] = new_cls
    return _CLASSES[cls]


def enable_gradient_checkpointing(
    module: nn.Module, pattern: str
) -> List[str]:
    """Checkpoint every submodule of ``module`` whose full name matches
    ``pattern``, in place.

    Returns:
        list[str]: the checkpointed submodules' names.

    Raises:
        ValueError: ``pattern`` matches no submodule (some names given).
    """
    regex = re.compile(pattern)
    names = []
    for name, sub in module.named_modules():
        if name and regex.fullmatch(name):
            sub.__class__ = _checkpointed_class(type(sub))
            names.append(name)
    if not names:
        some = [n for n, _ in module.named_modules() if n][:8]
        raise ValueError(
            f'gradient checkpointing: {pattern!r} matches no submodule '
            f'(full-name regex match; submodules are e.g. {some})'
        )
    return names


@MODELS.register_module(name='GradientCheckpointing')
def build_gradient_checkpointing(
    module: dict, pattern: str = r'layers\.\d+'
) -> nn.Module:
    """Config builder: ``module`` built, then its submodules matching
    ``pattern`` checkpointed (:func:`enable_gradient_checkpointing`);
    returns the module itself."""
    built = MODELS.build(module)
    enable_gradient_checkpointing(built, pattern)
    return built
