# Copyright (c) mmvfm contributors. All rights reserved.
"""Colours, backgrounds, rasterisation and the drawing of one image.

Every object is painted on exactly the pixels of the mask that
pycocotools rasterises from its polygon (:func:`_rasterise`), so masks,
areas and images agree pixel for pixel in both domains.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from .captions import _position_word, _size_word
from .common import TOY_CLASSES
from .geometry import _MIN_SIDE, Box, _place, _shape_polygon

RGB = Tuple[int, int, int]

TOY_COLORS: Dict[str, RGB] = {
    'red': (230, 40, 40),
    'green': (40, 200, 60),
    'blue': (40, 90, 240),
    'yellow': (245, 225, 50),
    'purple': (160, 70, 220),
    'orange': (250, 150, 30),
    'cyan': (50, 225, 230),
    'white': (245, 245, 245),
}
"""Named RGB colours of the objects (bright, unlike the background)."""

TOY_OOD_COLORS: Dict[str, RGB] = {
    'pink': (245, 90, 170),
    'brown': (140, 75, 25),
    'lime': (175, 250, 40),
    'teal': (0, 135, 130),
    'navy': (25, 35, 125),
    'maroon': (125, 15, 55),
    'black': (20, 20, 20),
    'olive': (125, 125, 0),
}
"""Named RGB colours of the out-of-domain objects.

No name is shared with :data:`TOY_COLORS` and every colour is at least
70 away (max over the channels) from each in-domain colour, far beyond
the +-6 jitter. Each has a channel <= 90, so it stands out from the light
out-of-domain backgrounds, whose channels are >= 120.
"""

OOD_BACKGROUNDS: Tuple[str, ...] = ('stripes', 'checker', 'gradient')
"""Background families of the out-of-domain images."""

OOD_STYLES: Tuple[str, ...] = ('striped', 'checkered', 'outlined')
"""Fill styles of the out-of-domain objects (all fill the whole mask)."""

_JITTER = 6  # max per-channel colour jitter of an object


def _rasterise(
    poly: Sequence[float], height: int, width: int
) -> Tuple[np.ndarray, float]:
    """Mask and area of one polygon as pycocotools computes them."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.merge(mask_utils.frPyObjects([list(poly)], height, width))
    return mask_utils.decode(rle), float(mask_utils.area(rle))


def _polygon_stats(
    polys: List[List[float]], height: int, width: int
) -> Tuple[List[float], List[List[float]]]:
    """Areas and tight boxes of single-polygon masks (no decoding)."""
    from pycocotools import mask as mask_utils

    if not polys:
        return [], []
    rles = mask_utils.frPyObjects(polys, height, width)
    areas = [float(a) for a in mask_utils.area(rles)]
    boxes = [[float(v) for v in b] for b in mask_utils.toBbox(rles)]
    return areas, boxes


# --------------------------------------------------------------------------
# in domain
# --------------------------------------------------------------------------
def _background(
    rng: np.random.Generator, height: int, width: int
) -> np.ndarray:
    """Muted, smooth noise texture plus mild fine grain (RGB uint8)."""
    gh, gw = (int(v) for v in rng.integers(3, 7, size=2))
    base = rng.uniform(60, 110)
    tint = rng.uniform(-20, 20, size=3)
    grid = base + tint + rng.uniform(-28, 28, size=(gh, gw, 3))
    smooth = cv2.resize(
        grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    smooth = np.clip(smooth, 40, 140)
    grain = rng.normal(0, 3, size=(height, width, 3))
    return np.clip(np.rint(smooth + grain), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# out of domain
# --------------------------------------------------------------------------
def _pixel_grid(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xs, ys)``, each ``(height, width)``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return xs + 0.5, ys + 0.5


def _stripe_parity(
    xs: np.ndarray, ys: np.ndarray, theta: float, width: float, phase: float
) -> np.ndarray:
    """Alternating bands of ``width`` px across the direction ``theta``."""
    t = (xs * math.cos(theta) + ys * math.sin(theta)) / width + phase
    return (np.floor(t) % 2).astype(bool)


def _ood_background(
    rng: np.random.Generator, height: int, width: int
) -> Tuple[np.ndarray, str]:
    """A light, noise-free geometric background (RGB uint8).

    One of :data:`OOD_BACKGROUNDS` in two tones: a light pastel colour
    (each channel in [150, 235]) and the same colour 20-30 darker, so every
    channel lies in [120, 235]:

    * ``stripes``: straight bands 4-10 px wide at any angle;
    * ``checker``: an axis-aligned checkerboard of 4-12 px cells;
    * ``gradient``: a linear ramp from one tone to the other across the
      image at any angle.

    Returns:
        tuple: The image and its family name.
    """
    kind = OOD_BACKGROUNDS[int(rng.integers(len(OOD_BACKGROUNDS)))]
    light = rng.uniform(150, 235, size=3)
    dark = light - rng.uniform(20, 30)
    xs, ys = _pixel_grid(height, width)
    if kind == 'stripes':
        odd = _stripe_parity(
            xs,
            ys,
            rng.uniform(0, math.pi),
            rng.uniform(4, 10),
            rng.uniform(0, 1),
        )
        image = np.where(odd[..., None], dark, light)
    elif kind == 'checker':
        cell = int(rng.integers(4, 13))
        ox, oy = (int(v) for v in rng.integers(0, cell, size=2))
        odd = (
            (xs.astype(int) + ox) // cell + (ys.astype(int) + oy) // cell
        ) % 2 == 1
        image = np.where(odd[..., None], dark, light)
    else:
        theta = rng.uniform(0, 2 * math.pi)
        proj = xs * math.cos(theta) + ys * math.sin(theta)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
        image = light + t[..., None] * (dark - light)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), kind


def _shade(rgb: np.ndarray) -> np.ndarray:
    """Second tone of a patterned object.

    Half as bright for a colour with a channel >= 100, else 30 % of the
    way to white (so black gets a visible grey pattern). Either way the
    shade keeps a channel <= 96 and so stays off the backgrounds.
    """
    rgb = rgb.astype(np.float64)
    if rgb.max() >= 100:
        return np.rint(rgb * 0.5)
    return np.rint(rgb + 0.3 * (255 - rgb))


def _paint_ood(
    image: np.ndarray,
    mask: np.ndarray,
    rgb: np.ndarray,
    side: int,
    rng: np.random.Generator,
) -> str:
    """Paint an object in a random :data:`OOD_STYLES` style.

    Every pixel of ``mask`` gets either ``rgb`` or its :func:`_shade` and
    no other pixel changes, so the mask is still exactly the object.

    * ``striped``: bands 2-4 px wide at any angle, alternating the two
      tones;
    * ``checkered``: 2-4 px cells of the two tones;
    * ``outlined``: ``rgb`` inside, the shade on the pixels of the mask
      within ``max(1, side // 12)`` px (3x3 erosions) of its border.

    Returns:
        str: The style.
    """
    style = OOD_STYLES[int(rng.integers(len(OOD_STYLES)))]
    inside = mask.astype(bool)
    height, width = mask.shape
    xs, ys = _pixel_grid(height, width)
    if style == 'striped':
        second = _stripe_parity(
            xs,
            ys,
            rng.uniform(0, math.pi),
            rng.uniform(2, 4),
            rng.uniform(0, 1),
        )
    elif style == 'checkered':
        cell = int(rng.integers(2, 5))
        ox, oy = (int(v) for v in rng.integers(0, cell, size=2))
        second = (
            (xs.astype(int) + ox) // cell + (ys.astype(int) + oy) // cell
        ) % 2 == 1
    else:
        core = cv2.erode(
            mask.astype(np.uint8),
            np.ones((3, 3), np.uint8),
            iterations=max(1, side // 12),
            borderType=cv2.BORDER_CONSTANT,
            borderValue=0,
        ).astype(bool)
        second = ~core
    shade = _shade(rgb).astype(np.uint8)
    image[inside & ~second] = rgb.astype(np.uint8)
    image[inside & second] = shade
    return style


# --------------------------------------------------------------------------
# one image
# --------------------------------------------------------------------------
def _make_image(
    rng: np.random.Generator,
    img_size: Tuple[int, int],
    num_objects: Tuple[int, int],
    obj_size: Tuple[float, float],
    domain: str = 'in',
) -> Tuple[np.ndarray, List[Dict[str, Any]], str]:
    """Draw one image and its objects.

    ``domain='in'`` draws exactly what the generator always drew (the
    same random numbers in the same order); ``'ood'`` draws layouts the
    same way but paints them with :func:`_ood_background`,
    :data:`TOY_OOD_COLORS` and :func:`_paint_ood`.

    Returns:
        tuple: RGB uint8 image, a list of object dicts with keys
        ``category_id``, ``polygon`` (flat list), ``bbox``, ``area``,
        ``mask`` (uint8), ``color``, ``size``, ``position`` and ``side``
        (plus ``style`` out of domain) and the background family
        (``'texture'`` in domain, one of :data:`OOD_BACKGROUNDS` out of
        domain).
    """
    width = int(rng.integers(img_size[0], img_size[1] + 1))
    height = int(rng.integers(img_size[0], img_size[1] + 1))
    short = min(width, height)
    if domain == 'in':
        image = _background(rng, height, width)
        background = 'texture'
        colors = TOY_COLORS
    else:
        image, background = _ood_background(rng, height, width)
        colors = TOY_OOD_COLORS
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    boxes: List[Box] = []
    objects: List[Dict[str, Any]] = []
    for k in range(count):
        label = int(rng.integers(len(TOY_CLASSES)))
        name = TOY_CLASSES[label]
        color = list(colors)[int(rng.integers(len(colors)))]
        jitter = rng.integers(-_JITTER, _JITTER + 1, size=3)
        side = max(
            _MIN_SIDE,
            int(round(rng.uniform(obj_size[0], obj_size[1]) * short)),
        )
        rel = _shape_polygon(name, side, rng)
        poly = _place(rel, rng, height, width, boxes)
        # the first object must exist: shrink it until it fits
        while poly is None and k == 0 and side > _MIN_SIDE:
            new_side = max(_MIN_SIDE, int(side * 0.85))
            rel = rel * (new_side / side)
            side = new_side
            poly = _place(rel, rng, height, width, boxes)
        if poly is None:
            if k == 0:  # pragma: no cover - img_size >= 32 always fits
                raise RuntimeError('could not place a single object')
            continue
        flat = [float(v) for v in poly.reshape(-1)]
        boxes.append((*poly.min(axis=0), *poly.max(axis=0)))
        mask, area = _rasterise(flat, height, width)
        # the box is the tight box of the mask (what the image shows); the
        # polygon's own box can stick out by ~2 px at sharp corners
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        x0, x1 = float(cols[0]), float(cols[-1] + 1)
        y0, y1 = float(rows[0]), float(rows[-1] + 1)
        rgb = np.clip(np.array(colors[color]) + jitter, 0, 255)
        obj = dict(
            category_id=label + 1,
            polygon=flat,
            bbox=[x0, y0, x1 - x0, y1 - y0],
            area=area,
            mask=mask,
            color=color,
            size=_size_word(side / short, obj_size),
            position=_position_word(
                (x0 + x1) / 2, (y0 + y1) / 2, width, height
            ),
            side=side,
        )
        if domain == 'in':
            image[mask.astype(bool)] = rgb.astype(np.uint8)
        else:
            obj['style'] = _paint_ood(image, mask, rgb, side, rng)
        objects.append(obj)
    return image, objects, background
