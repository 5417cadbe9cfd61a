# Copyright (c) mmvfm contributors. All rights reserved.
"""Deprecated alias of :mod:`mmvfm.models.common` (its old name)."""

import warnings

from . import common


def __getattr__(name: str):
    if name in common.__all__:
        warnings.warn(
            f'mmvfm.models.utils.{name} moved to mmvfm.models.common.{name}',
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(common, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
