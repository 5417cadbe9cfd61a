# Copyright (c) mmvfm contributors. All rights reserved.
"""Pieces the model families share: the all-gather that keeps gradients,
rank-local loss normalisers, gradient checkpointing by regex, the checks of
``init_cfg`` pretrained keys, and the scores of a predicted class.

Model code only. :mod:`mmvfm.utils` is the other helper package: run setup
and the checks of a config's paths (configs, data, checkpoints); it stays
light (no ``mmdet.models``) and imports no ``mmvfm.models``. This package was
``mmvfm.models.utils`` (that name still works, with a warning).
"""

from .class_scores import set_class_scores
from .gather import all_gather_with_grad
from .grad_checkpoint import (
    build_gradient_checkpointing,
    enable_gradient_checkpointing,
)
from .local_normalizer import rank_local_normalizers
from .strict_pretrained import check_pretrained_keys, pretrained_inits

__all__ = [
    'all_gather_with_grad',
    'check_pretrained_keys',
    'pretrained_inits',
    'rank_local_normalizers',
    'build_gradient_checkpointing',
    'enable_gradient_checkpointing',
    'set_class_scores',
]
