# Copyright (c) mmvfm contributors. All rights reserved.
"""GQPos: guided query position for DETR-style detectors (registered into
mmdet's ``MODELS``); see ``configs/gqpos/README.md``."""

from .gqpos_conditional_detr import GQPosConditionalDETR
from .gqpos_deformable_detr import GQPosDeformableDETR
from .gqpos_detr import GQPosDETR
from .query_pos_guide import (
    GQPOS_DEFAULTS,
    QueryPosGuide,
    QueryPosProbe,
    build_query_pos_guide,
    parse_gqpos_cfg,
)

__all__ = [
    'GQPOS_DEFAULTS',
    'GQPosConditionalDETR',
    'GQPosDETR',
    'GQPosDeformableDETR',
    'QueryPosGuide',
    'QueryPosProbe',
    'build_query_pos_guide',
    'parse_gqpos_cfg',
]
