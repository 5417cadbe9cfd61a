# Copyright (c) mmvfm contributors. All rights reserved.
"""Reusable ops; they import nothing from mmvfm's models."""

from .similar_attention import (
    similar_attention,
    similar_attention_pytorch,
    similar_attention_sdpa,
)

__all__ = [
    'similar_attention',
    'similar_attention_pytorch',
    'similar_attention_sdpa',
]
