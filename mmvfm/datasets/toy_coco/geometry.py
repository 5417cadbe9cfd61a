# Copyright (c) mmvfm contributors. All rights reserved.
"""Shape polygons, rotation and rejection-sampled placement."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

_MARGIN = 2  # px: gap between boxes and between boxes and image border
_MAX_TRIES = 40  # placement attempts per object
_MIN_SIDE = 8  # px: smallest object side

Box = Tuple[float, float, float, float]


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate ``(N, 2)`` points about the origin."""
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rot.T


def _circle_points(
    radius: float, n: int, phase: float, direction: int = 1
) -> np.ndarray:
    """``n + 1`` points of a regular n-gon, the last repeating the first."""
    t = phase + direction * np.arange(n + 1) * (2 * math.pi / n)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _shape_polygon(
    name: str, side: float, rng: np.random.Generator
) -> np.ndarray:
    """Polygon of a shape centred on the origin.

    Args:
        name: One of :data:`TOY_CLASSES`.
        side: Side length (diameter for circle and ring, arm span for the
            cross) in pixels.
        rng: Random generator for the rotation.

    Returns:
        np.ndarray: ``(N, 2)`` float vertices (x, y).
    """
    half = side / 2
    if name == 'circle':
        return _circle_points(half, 24, rng.uniform(0, math.pi / 12))[:-1]
    if name == 'square':
        pts = np.array(
            [[-half, -half], [half, -half], [half, half], [-half, half]]
        )
        return _rotate(pts, rng.uniform(-20, 20))
    if name == 'triangle':
        radius = side / math.sqrt(3)
        phase = rng.uniform(0, 2 * math.pi / 3)
        return _circle_points(radius, 3, phase)[:-1]
    if name == 'cross':
        w = side / 6  # arm width side / 3
        pts = np.array(
            [
                [-w, -half],
                [w, -half],
                [w, -w],
                [half, -w],
                [half, w],
                [w, w],
                [w, half],
                [-w, half],
                [-w, w],
                [-half, w],
                [-half, -w],
                [-w, -w],
            ]
        )
        return _rotate(pts, rng.uniform(-20, 20))
    if name == 'ring':
        # A "keyhole" polygon: the outer circle one way, a zero-width cut
        # to the inner circle, the inner circle the other way; the closing
        # edge runs back along the cut. Its even-odd fill is the annulus.
        phase = rng.uniform(0, 2 * math.pi)
        outer = _circle_points(half, 24, phase, 1)
        inner = _circle_points(0.55 * half, 24, phase, -1)
        return np.concatenate([outer, inner], axis=0)
    raise ValueError(f'unknown shape {name!r}')


def _boxes_clash(box: Box, others: List[Box]) -> bool:
    """Whether ``box`` grown by the margin meets any of ``others``."""
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in others:
        if (
            x0 - _MARGIN < a1
            and a0 < x1 + _MARGIN
            and y0 - _MARGIN < b1
            and b0 < y1 + _MARGIN
        ):
            return True
    return False


def _place(
    rel: np.ndarray,
    rng: np.random.Generator,
    height: int,
    width: int,
    boxes: List[Box],
) -> Optional[np.ndarray]:
    """Rejection-sample a position for a centred polygon.

    Returns:
        np.ndarray | None: The translated polygon (rounded to 0.01 px) or
        None when no free place was found.
    """
    lo = rel.min(axis=0)
    hi = rel.max(axis=0)
    x_min, x_max = _MARGIN - lo[0], width - _MARGIN - hi[0]
    y_min, y_max = _MARGIN - lo[1], height - _MARGIN - hi[1]
    if x_min > x_max or y_min > y_max:
        return None
    for _ in range(_MAX_TRIES):
        centre = np.array(
            [rng.uniform(x_min, x_max), rng.uniform(y_min, y_max)]
        )
        poly = np.round(rel + centre, 2)
        box = (*poly.min(axis=0), *poly.max(axis=0))
        if (
            box[0] >= _MARGIN - 0.01
            and box[1] >= _MARGIN - 0.01
            and box[2] <= width - _MARGIN + 0.01
            and box[3] <= height - _MARGIN + 0.01
            and not _boxes_clash(box, boxes)
        ):
            return poly
    return None
