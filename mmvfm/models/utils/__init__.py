# Copyright (c) mmvfm contributors. All rights reserved.
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
