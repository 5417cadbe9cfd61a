# Copyright (c) mmvfm contributors. All rights reserved.
"""Names, numbers and argument helpers shared by the toy COCO modules."""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import numpy as np

TOY_CLASSES: Tuple[str, ...] = (
    'circle',
    'square',
    'triangle',
    'ring',
    'cross',
)
"""The class names; their order gives the category ids 1..5."""

TOY_PALETTE: List[Tuple[int, int, int]] = [
    (220, 20, 60),
    (0, 130, 255),
    (255, 165, 0),
    (60, 180, 75),
    (145, 30, 180),
]
"""One RGB colour per class, for visualisation."""

TOY_SPLITS: Tuple[str, ...] = ('train', 'val')

TOY_DOMAINS: Tuple[str, ...] = ('in', 'ood')
"""The appearance domains of :func:`generate_toy_coco`."""

SIZE_WORDS: Tuple[str, ...] = ('small', 'medium', 'large')
POSITIONS: Tuple[str, ...] = (
    'top left',
    'top',
    'top right',
    'left',
    'center',
    'right',
    'bottom left',
    'bottom',
    'bottom right',
)

_VERSION = '1.0'
_ANN_KINDS = ('instances', 'captions', 'classification', 'multilabel')
_REGEN_HINT = 'python tools/dataset_converters/generate_toy_coco.py'

IntPair = Union[int, Sequence[int]]
FloatPair = Union[float, Sequence[float]]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int_pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Turn an int or a pair of ints into a (min, max) pair."""
    if _is_int(value):
        return int(value), int(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(_is_int(v) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f'{name} must be an int or a pair of ints (min, max), got {value!r}'
    )


def _float_pair(value: FloatPair, name: str) -> Tuple[float, float]:
    """Turn a number or a pair of numbers into a (min, max) pair."""
    if isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    ):
        return float(value), float(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(
            isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            for v in value
        )
    ):
        return float(value[0]), float(value[1])
    raise ValueError(
        f'{name} must be a number or a pair of numbers '
        f'(min, max), got {value!r}'
    )
