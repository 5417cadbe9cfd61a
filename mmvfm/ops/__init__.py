# Copyright (c) mmvfm contributors. All rights reserved.
"""Reusable ops; they import nothing from mmvfm's models."""

from .fgd_reductions import (
    FGDMapStatsFunction,
    FGDPairStatsFunction,
    fgd_map_stats,
    fgd_map_stats_pytorch,
    fgd_pair_stats,
    fgd_pair_stats_pytorch,
)
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
    'FGDMapStatsFunction',
    'FGDPairStatsFunction',
    'fgd_map_stats',
    'fgd_map_stats_pytorch',
    'fgd_pair_stats',
    'fgd_pair_stats_pytorch',
    'MSDeformAttnFunction',
    'ext_available',
    'load_ext_jit',
    'ms_deform_attn',
    'ms_deform_attn_pytorch',
    'similar_attention',
    'similar_attention_pytorch',
    'similar_attention_sdpa',
]
