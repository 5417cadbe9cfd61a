# Copyright (c) mmvfm contributors. All rights reserved.
from .fgd_reference import FGDLossReference
from .smoke_run import (
    SPATIAL_KEYS,
    bad_losses,
    iter_leaf_datasets,
    make_smoke_data,
    smoke_config,
    smoke_losses,
)

__all__ = [
    'FGDLossReference',
    'SPATIAL_KEYS',
    'bad_losses',
    'iter_leaf_datasets',
    'make_smoke_data',
    'smoke_config',
    'smoke_losses',
]
