# Copyright (c) mmvfm contributors. All rights reserved.
from .grad_checkpoint import (
    build_gradient_checkpointing,
    enable_gradient_checkpointing,
)

__all__ = ['build_gradient_checkpointing', 'enable_gradient_checkpointing']
