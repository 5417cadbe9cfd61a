# Copyright (c) mmvfm contributors. All rights reserved.
from .grad_checkpoint import (
    build_gradient_checkpointing,
    enable_gradient_checkpointing,
)
from .strict_pretrained import check_pretrained_keys, pretrained_inits

__all__ = [
    'check_pretrained_keys',
    'pretrained_inits',
    'build_gradient_checkpointing',
    'enable_gradient_checkpointing',
]
