# Copyright (c) mmvfm contributors. All rights reserved.
"""Reusable ops; they import nothing from mmvfm's models."""

from .ms_deform_attn import (
    MSDeformAttnFunction,
    ext_available,
    load_ext_jit,
    ms_deform_attn,
    ms_deform_attn_pytorch,
)
from .similar_attention import (
    similar_attention,
    similar_attention_pytorch,
    similar_attention_sdpa,
)

__all__ = [
    'MSDeformAttnFunction',
    'ext_available',
    'load_ext_jit',
    'ms_deform_attn',
    'ms_deform_attn_pytorch',
    'similar_attention',
    'similar_attention_pytorch',
    'similar_attention_sdpa',
]
