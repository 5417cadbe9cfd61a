# Copyright (c) mmvfm contributors. All rights reserved.
"""SiA (similar attention): dense multi-scale cross-attention with
attention-map fusion, its neck and a multi-scale DETR using both."""

from .sia_attention import SiAMultiScaleAttention
from .sia_detr import (
    SiADETR,
    SiATransformerDecoder,
    SiATransformerDecoderLayer,
)
from .sia_neck import SiAFusionNeck

__all__ = [
    'SiAMultiScaleAttention',
    'SiAFusionNeck',
    'SiADETR',
    'SiATransformerDecoder',
    'SiATransformerDecoderLayer',
]
