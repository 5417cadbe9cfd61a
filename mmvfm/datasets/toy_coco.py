# Copyright (c) mmvfm contributors. All rights reserved.
"""A deterministic toy dataset in COCO format.

:func:`generate_toy_coco` draws small images of coloured shapes on a
textured background and writes, for a ``train`` and a ``val`` split:

* ``annotations/instances_{split}.json``: COCO instances (boxes, polygon
  masks, areas) plus the extra keys ``color``, ``size`` and ``position``
  on each annotation;
* ``annotations/captions_{split}.json``: COCO captions, several different
  references per image, each naming every object of the image;
* ``annotations/classification_{split}.json``: OpenMMLab 2.0 annotation
  file with the dominant class (largest total mask area) as ``gt_label``;
* ``annotations/multilabel_{split}.json``: the same with the sorted list
  of classes present as ``gt_label``;
* ``classes.txt`` and the PNG images ``{split}/{image_id:06d}.png``.

Every shape is a polygon. The pixels of an object are exactly the mask
that pycocotools rasterises from the polygon stored in the json, so the
masks, areas and images agree pixel for pixel. (``cv2.fillPoly`` uses
another rasterisation rule and differs on about 8 % of the pixels of a
small circle, which is why it is not used for painting.)

The module only needs the standard library, numpy, OpenCV and
pycocotools; mmengine is imported lazily for the optional progress bar.
"""

from __future__ import annotations

import json
import math
import os
import os.path as osp
import shutil
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    'TOY_CLASSES',
    'TOY_COLORS',
    'TOY_PALETTE',
    'TOY_SPLITS',
    'generate_toy_coco',
    'verify_toy_coco',
]

TOY_CLASSES: Tuple[str, ...] = (
    'circle',
    'square',
    'triangle',
    'ring',
    'cross',
)
"""The class names; their order gives the category ids 1..5."""

TOY_COLORS: Dict[str, Tuple[int, int, int]] = {
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

TOY_PALETTE: List[Tuple[int, int, int]] = [
    (220, 20, 60),
    (0, 130, 255),
    (255, 165, 0),
    (60, 180, 75),
    (145, 30, 180),
]
"""One RGB colour per class, for visualisation."""

TOY_SPLITS: Tuple[str, ...] = ('train', 'val')

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
_MARGIN = 2  # px: gap between boxes and between boxes and image border
_MAX_TRIES = 40  # placement attempts per object
_MIN_SIDE = 8  # px: smallest object side
_JITTER = 6  # max per-channel colour jitter of an object
_ANN_KINDS = ('instances', 'captions', 'classification', 'multilabel')
_SPLIT_CODES = {'train': 0, 'val': 1}
_COUNT_WORDS = (
    'zero',
    'one',
    'two',
    'three',
    'four',
    'five',
    'six',
    'seven',
    'eight',
)
_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    'circle': ('circle', 'disc', 'round dot'),
    'square': ('square', 'box', 'block'),
    'triangle': ('triangle', 'three sided shape'),
    'ring': ('ring', 'donut', 'hoop'),
    'cross': ('cross', 'plus sign', 'plus'),
}
_POSITION_PHRASES: Dict[str, Tuple[str, ...]] = {
    'top left': (
        'in the top left',
        'at the top left',
        'in the top left corner',
        'near the top left corner',
        'in the upper left',
    ),
    'top': (
        'at the top',
        'near the top',
        'along the top edge',
        'in the top middle',
    ),
    'top right': (
        'in the top right',
        'at the top right',
        'in the top right corner',
        'near the top right corner',
        'in the upper right',
    ),
    'left': (
        'on the left',
        'at the left',
        'on the left side',
        'near the left edge',
    ),
    'center': (
        'in the center',
        'in the middle',
        'at the center',
        'near the center',
    ),
    'right': (
        'on the right',
        'at the right',
        'on the right side',
        'near the right edge',
    ),
    'bottom left': (
        'in the bottom left',
        'at the bottom left',
        'in the bottom left corner',
        'near the bottom left corner',
        'in the lower left',
    ),
    'bottom': (
        'at the bottom',
        'near the bottom',
        'along the bottom edge',
        'in the bottom middle',
    ),
    'bottom right': (
        'in the bottom right',
        'at the bottom right',
        'in the bottom right corner',
        'near the bottom right corner',
        'in the lower right',
    ),
}
_REGEN_HINT = 'python tools/dataset_converters/generate_toy_coco.py'

IntPair = Union[int, Sequence[int]]
FloatPair = Union[float, Sequence[float]]


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
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


def _check_args(
    num_train: int,
    num_val: int,
    img_size: IntPair,
    num_objects: IntPair,
    obj_size: FloatPair,
    num_captions: int,
    seed: int,
) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[float, float]]:
    """Validate the arguments of :func:`generate_toy_coco`.

    Returns:
        tuple: ``img_size``, ``num_objects`` and ``obj_size`` as pairs.

    Raises:
        ValueError: naming the first bad argument.
    """
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if not _is_int(value) or value < 1:
            raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    if not _is_int(num_captions) or not 1 <= num_captions <= 20:
        raise ValueError(
            f'num_captions must be an int in [1, 20], got {num_captions!r}'
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    size = _int_pair(img_size, 'img_size')
    if size[0] > size[1]:
        raise ValueError(f'img_size: min {size[0]} > max {size[1]}')
    if size[0] < 32 or size[1] > 1024:
        raise ValueError(f'img_size must lie in [32, 1024], got {size}')
    nobj = _int_pair(num_objects, 'num_objects')
    if nobj[0] < 1 or nobj[1] > 8 or nobj[0] > nobj[1]:
        raise ValueError(
            f'num_objects must satisfy 1 <= min <= max <= 8, got {nobj}'
        )
    osize = _float_pair(obj_size, 'obj_size')
    if not (0 < osize[0] <= 1 and 0 < osize[1] <= 1):
        raise ValueError(f'obj_size values must lie in (0, 1], got {osize}')
    if osize[0] > osize[1]:
        raise ValueError(f'obj_size: min {osize[0]} > max {osize[1]}')
    return size, nobj, osize


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------
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


def _size_word(rel: float, obj_size: Tuple[float, float]) -> str:
    """``small``/``medium``/``large`` by thirds of the obj_size range."""
    lo, hi = obj_size
    if hi - lo < 1e-6:
        return 'medium'
    third = (hi - lo) / 3
    if rel < lo + third:
        return 'small'
    if rel < lo + 2 * third:
        return 'medium'
    return 'large'


def _position_word(cx: float, cy: float, width: int, height: int) -> str:
    """Cell of the 3x3 grid that holds the point (cx, cy)."""
    col = min(2, max(0, int(3 * cx / width)))
    row = min(2, max(0, int(3 * cy / height)))
    return POSITIONS[3 * row + col]


# --------------------------------------------------------------------------
# image synthesis
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


def _boxes_clash(
    box: Tuple[float, float, float, float],
    others: List[Tuple[float, float, float, float]],
) -> bool:
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
    boxes: List[Tuple[float, float, float, float]],
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


def _make_image(
    rng: np.random.Generator,
    img_size: Tuple[int, int],
    num_objects: Tuple[int, int],
    obj_size: Tuple[float, float],
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Draw one image and its objects.

    Returns:
        tuple: RGB uint8 image and a list of object dicts with keys
        ``category_id``, ``polygon`` (flat list), ``bbox``, ``area``,
        ``mask`` (uint8), ``color``, ``size``, ``position`` and ``side``.
    """
    width = int(rng.integers(img_size[0], img_size[1] + 1))
    height = int(rng.integers(img_size[0], img_size[1] + 1))
    short = min(width, height)
    image = _background(rng, height, width)
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    boxes: List[Tuple[float, float, float, float]] = []
    objects: List[Dict[str, Any]] = []
    for k in range(count):
        label = int(rng.integers(len(TOY_CLASSES)))
        name = TOY_CLASSES[label]
        color = list(TOY_COLORS)[int(rng.integers(len(TOY_COLORS)))]
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
        rgb = np.clip(np.array(TOY_COLORS[color]) + jitter, 0, 255)
        image[mask.astype(bool)] = rgb.astype(np.uint8)
        objects.append(
            dict(
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
        )
    return image, objects


# --------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------
def _article(word: str) -> str:
    return 'an' if word[0] in 'aeiou' else 'a'


def _join(parts: List[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ', '.join(parts[:-1]) + ' and ' + parts[-1]


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    noun = (
        rng.choice(['shape', 'object'])
        if n == 1
        else rng.choice(['shapes', 'objects', 'colored shapes'])
    )
    return f'{_COUNT_WORDS[n]} {noun}'


def _one_caption(
    objects: List[Dict[str, Any]], rng: np.random.Generator, exact: bool
) -> str:
    """Build one caption naming every object.

    Args:
        objects: Object dicts with ``category_id``, ``color``, ``size``,
            ``position``, ``bbox`` and ``area``.
        rng: Random generator.
        exact: Use the exact class names, reading order and the plain
            template (for the first caption of an image).
    """
    n = len(objects)
    order = list(range(n))
    if exact:
        mode = 'reading'
    else:
        mode = str(rng.choice(['random', 'reading', 'size']))
    if mode == 'random':
        order = [int(i) for i in rng.permutation(n)]
    elif mode == 'reading':
        order.sort(
            key=lambda i: (
                POSITIONS.index(objects[i]['position']),
                objects[i]['bbox'][0],
            )
        )
    else:
        order.sort(key=lambda i: -objects[i]['area'])
    nouns, places, bare = [], [], []
    for i in order:
        obj = objects[i]
        name = TOY_CLASSES[obj['category_id'] - 1]
        noun = name
        if not exact and rng.random() < 0.35:
            noun = str(rng.choice(_SYNONYMS[name]))
        place = str(rng.choice(_POSITION_PHRASES[obj['position']]))
        if exact:
            place = _POSITION_PHRASES[obj['position']][0]
        words = f'{obj["size"]} {obj["color"]} {noun}'
        bare.append(f'{_article(words)} {words}')
        nouns.append(f'{bare[-1]} {place}')
        places.append(place)
    if exact:
        return _join(nouns)
    listed = _join(nouns)
    template = int(rng.integers(12))
    if template == 0:
        caption = listed
    elif template == 1:
        caption = f'{_count_phrase(n, rng)}: {listed}'
    elif template == 2:
        verb = 'is' if n == 1 else 'are'
        caption = f'there {verb} {listed}'
    elif template == 3:
        caption = f'an image of {listed}'
    elif template == 4:
        caption = f'a picture showing {listed}'
    elif template == 5:
        caption = f'{listed} on a textured background'
    elif template == 6:
        caption = f'a textured background with {listed}'
    elif template == 7:
        caption = f'{_count_phrase(n, rng)} on a textured background: {listed}'
    elif template == 8:
        parts = [f'{p} there is {b}' for p, b in zip(places, bare)]
        caption = _join(parts)
    elif template == 9:
        if n == 1:
            caption = f'a single shape, {listed}'
        else:
            caption = f'{nouns[0]} along with {_join(nouns[1:])}'
    elif template == 10:
        if n == 1:
            caption = f'only one shape: {listed}'
        else:
            caption = f'{nouns[0]} next to {_join(nouns[1:])}'
    else:
        caption = f'a dark textured scene containing {listed}'
    return caption


def _captions(
    objects: List[Dict[str, Any]], num: int, rng: np.random.Generator
) -> List[str]:
    """``num`` different captions of one image; the first is exact."""
    captions = [_one_caption(objects, rng, exact=True)]
    seen = set(captions)
    tries = 0
    while len(captions) < num:
        tries += 1
        if tries > 2000:  # pragma: no cover - far more variants exist
            raise RuntimeError(f'could not make {num} different captions')
        caption = _one_caption(objects, rng, exact=False)
        if caption not in seen:
            seen.add(caption)
            captions.append(caption)
    return captions


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------
def _dump_json(obj: Any, path: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=None, separators=(',', ':'), sort_keys=True)
        f.write('\n')


def _categories() -> List[Dict[str, Any]]:
    return [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(TOY_CLASSES)
    ]


def _dominant(objects: List[Dict[str, Any]]) -> int:
    """0-based class with the largest total area (ties: lower index)."""
    totals = [0.0] * len(TOY_CLASSES)
    for obj in objects:
        totals[obj['category_id'] - 1] += obj['area']
    return int(np.argmax(totals))


def _generate_split(
    out_dir: str,
    split: str,
    num_images: int,
    seed: int,
    img_size: Tuple[int, int],
    num_objects: Tuple[int, int],
    obj_size: Tuple[float, float],
    num_captions: int,
    progress: bool,
) -> Dict[str, Any]:
    """Write the images and annotation files of one split."""
    img_dir = osp.join(out_dir, split)
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    info = dict(
        description='mmvfm toy COCO: coloured shapes on a textured background',
        version=_VERSION,
        split=split,
        seed=seed,
        num_images=num_images,
        img_size=list(img_size),
        num_objects=list(num_objects),
        obj_size=list(obj_size),
        num_captions=num_captions,
    )
    images, anns, caps, cls_list, ml_list = [], [], [], [], []
    bar = None
    if progress:
        from mmengine.utils import ProgressBar

        print(f'generating {num_images} {split} images')
        bar = ProgressBar(num_images)
    for idx in range(num_images):
        image_id = idx + 1
        seq = np.random.SeedSequence(
            entropy=seed, spawn_key=(_SPLIT_CODES[split], idx)
        )
        img_rng, cap_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        image, objects = _make_image(img_rng, img_size, num_objects, obj_size)
        height, width = image.shape[:2]
        file_name = f'{split}/{image_id:06d}.png'
        cv2.imwrite(
            osp.join(out_dir, file_name),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        )
        images.append(
            dict(id=image_id, file_name=file_name, width=width, height=height)
        )
        for obj in objects:
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=image_id,
                    category_id=obj['category_id'],
                    bbox=obj['bbox'],
                    area=obj['area'],
                    segmentation=[obj['polygon']],
                    iscrowd=0,
                    color=obj['color'],
                    size=obj['size'],
                    position=obj['position'],
                )
            )
        for caption in _captions(objects, num_captions, cap_rng):
            caps.append(
                dict(id=len(caps) + 1, image_id=image_id, caption=caption)
            )
        cls_list.append(dict(img_path=file_name, gt_label=_dominant(objects)))
        ml_list.append(
            dict(
                img_path=file_name,
                gt_label=sorted({o['category_id'] - 1 for o in objects}),
            )
        )
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    paths = {
        kind: osp.join(ann_dir, f'{kind}_{split}.json') for kind in _ANN_KINDS
    }
    _dump_json(
        dict(
            info=info,
            licenses=[],
            images=images,
            annotations=anns,
            categories=_categories(),
        ),
        paths['instances'],
    )
    _dump_json(
        dict(info=info, licenses=[], images=images, annotations=caps),
        paths['captions'],
    )
    metainfo = dict(classes=list(TOY_CLASSES))
    _dump_json(
        dict(metainfo=metainfo, data_list=cls_list), paths['classification']
    )
    _dump_json(dict(metainfo=metainfo, data_list=ml_list), paths['multilabel'])
    return dict(
        img_dir=img_dir,
        num_images=len(images),
        num_annotations=len(anns),
        num_captions=len(caps),
        **paths,
    )


def generate_toy_coco(
    out_dir: str,
    num_train: int = 2000,
    num_val: int = 200,
    img_size: IntPair = (112, 128),
    num_objects: IntPair = (1, 4),
    obj_size: FloatPair = (0.125, 0.5),
    num_captions: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Dict[str, Any]:
    """Generate the toy COCO dataset.

    The same arguments always give byte-identical files. Every image has
    its own random generator derived from ``(seed, split, index)``, so the
    val split does not depend on ``num_train`` and the first images of a
    split do not depend on its length.

    Args:
        out_dir: Output folder (the ``data_root`` of the set).
        num_train: Number of training images (>= 1).
        num_val: Number of validation images (>= 1).
        img_size: Image width and height are drawn independently and
            uniformly from ``[min, max]``; one int gives a fixed square
            size. Must lie in [32, 1024].
        num_objects: ``(min, max)`` objects per image, 1 <= min <= max <=
            8; objects that do not fit are dropped (at least one stays).
        obj_size: ``(min, max)`` object side relative to the shorter image
            side, in (0, 1].
        num_captions: Different captions per image, in [1, 20].
        seed: Random seed (>= 0).
        overwrite: Replace an existing set in ``out_dir``.
        progress: Show an mmengine progress bar.

    Returns:
        dict: ``out_dir``, ``classes_file`` and, per split (``train``,
        ``val``), a dict with ``img_dir``, ``num_images``,
        ``num_annotations``, ``num_captions`` and the paths of the
        ``instances``, ``captions``, ``classification`` and ``multilabel``
        json files.

    Raises:
        ValueError: On a bad argument (the message names it).
        FileExistsError: If ``out_dir`` already holds annotations and
            ``overwrite`` is False.
    """
    size, nobj, osize = _check_args(
        num_train, num_val, img_size, num_objects, obj_size, num_captions, seed
    )
    out_dir = str(out_dir)
    ann_dir = osp.join(out_dir, 'annotations')
    if osp.isdir(ann_dir) and os.listdir(ann_dir):
        if not overwrite:
            raise FileExistsError(
                f'{out_dir} already contains a dataset ({ann_dir}); pass '
                'overwrite=True (--overwrite) to replace it'
            )
    if overwrite:
        # remove only what this function writes, never the whole folder
        for name in (*TOY_SPLITS, 'annotations'):
            path = osp.join(out_dir, name)
            if osp.isdir(path):
                shutil.rmtree(path)
        if osp.isfile(osp.join(out_dir, 'classes.txt')):
            os.remove(osp.join(out_dir, 'classes.txt'))
    os.makedirs(out_dir, exist_ok=True)
    result: Dict[str, Any] = dict(out_dir=out_dir)
    for split, num in (('train', num_train), ('val', num_val)):
        result[split] = _generate_split(
            out_dir,
            split,
            num,
            seed,
            size,
            nobj,
            osize,
            num_captions,
            progress,
        )
    classes_file = osp.join(out_dir, 'classes.txt')
    with open(classes_file, 'w', encoding='utf-8') as f:
        f.write('\n'.join(TOY_CLASSES) + '\n')
    result['classes_file'] = classes_file
    return result


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------
def _png_size(path: str) -> Tuple[int, int]:
    """(width, height) from a PNG header, without decoding the image."""
    with open(path, 'rb') as f:
        head = f.read(24)
    if (
        len(head) < 24
        or head[:8] != b'\x89PNG\r\n\x1a\n'
        or head[12:16] != b'IHDR'
    ):
        raise ValueError(f'{path}: not a PNG file')
    width, height = struct.unpack('>II', head[16:24])
    return width, height


def _load_json(path: str, data_root: str) -> Any:
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'toy COCO file {path} is missing; generate the set with: '
            f'{_REGEN_HINT} {data_root}'
        )
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}: invalid json ({e})') from e


def _require(cond: bool, path: str, field: str, msg: str) -> None:
    if not cond:
        raise ValueError(f'{path}: field "{field}": {msg}')


def _verify_split(data_root: str, split: str) -> Dict[str, int]:
    """Check the files of one split; return its counts."""
    ann_dir = osp.join(data_root, 'annotations')
    paths = {
        kind: osp.join(ann_dir, f'{kind}_{split}.json') for kind in _ANN_KINDS
    }
    data = {kind: _load_json(p, data_root) for kind, p in paths.items()}

    # instances ----------------------------------------------------------
    path, inst = paths['instances'], data['instances']
    for key in ('images', 'annotations', 'categories'):
        _require(isinstance(inst.get(key), list), path, key, 'missing')
    cats = [(c.get('id'), c.get('name')) for c in inst['categories']]
    _require(
        cats == [(i + 1, n) for i, n in enumerate(TOY_CLASSES)],
        path,
        'categories',
        f'expected ids 1..5 named {TOY_CLASSES}',
    )
    images: Dict[int, Dict[str, Any]] = {}
    for img in inst['images']:
        img_id = img.get('id')
        _require(
            _is_int(img_id) and img_id not in images,
            path,
            'images.id',
            f'bad or duplicate id {img_id!r}',
        )
        file_path = osp.join(data_root, str(img.get('file_name')))
        if not osp.isfile(file_path):
            raise FileNotFoundError(
                f'{path}: image {file_path} (images.file_name) is missing; '
                f'generate the set with: {_REGEN_HINT} {data_root}'
            )
        w, h = _png_size(file_path)
        _require(
            (w, h) == (img.get('width'), img.get('height')),
            path,
            'images.width/height',
            f'{file_path} is {w}x{h}, json says '
            f'{img.get("width")}x{img.get("height")}',
        )
        images[img_id] = img
    _require(len(images) > 0, path, 'images', 'empty')
    ann_ids = set()
    per_image_area: Dict[int, List[float]] = {
        i: [0.0] * len(TOY_CLASSES) for i in images
    }
    polys: Dict[Tuple[int, int], List[List[float]]] = {}
    poly_ann: Dict[Tuple[int, int], List[Dict[str, Any]]] = {}
    for ann in inst['annotations']:
        ann_id = ann.get('id')
        _require(
            _is_int(ann_id) and ann_id not in ann_ids,
            path,
            'annotations.id',
            f'bad or duplicate id {ann_id!r}',
        )
        ann_ids.add(ann_id)
        img = images.get(ann.get('image_id'))
        _require(
            img is not None,
            path,
            'annotations.image_id',
            f'annotation {ann_id} refers to unknown image '
            f'{ann.get("image_id")!r}',
        )
        cat = ann.get('category_id')
        _require(
            _is_int(cat) and 1 <= cat <= len(TOY_CLASSES),
            path,
            'annotations.category_id',
            f'annotation {ann_id}: {cat!r}',
        )
        bbox = ann.get('bbox')
        _require(
            isinstance(bbox, list) and len(bbox) == 4,
            path,
            'annotations.bbox',
            f'annotation {ann_id}: {bbox!r}',
        )
        x, y, bw, bh = bbox
        _require(
            bw >= 1
            and bh >= 1
            and x >= 0
            and y >= 0
            and x + bw <= img['width'] + 1e-6
            and y + bh <= img['height'] + 1e-6,
            path,
            'annotations.bbox',
            f'annotation {ann_id}: {bbox} not inside the '
            f'{img["width"]}x{img["height"]} image',
        )
        seg = ann.get('segmentation')
        _require(
            isinstance(seg, list)
            and len(seg) == 1
            and isinstance(seg[0], list)
            and len(seg[0]) >= 6
            and len(seg[0]) % 2 == 0,
            path,
            'annotations.segmentation',
            f'annotation {ann_id}: expected one polygon',
        )
        _require(
            ann.get('iscrowd') == 0,
            path,
            'annotations.iscrowd',
            f'annotation {ann_id}: expected 0',
        )
        for key, allowed in (
            ('color', TOY_COLORS),
            ('size', SIZE_WORDS),
            ('position', POSITIONS),
        ):
            _require(
                ann.get(key) in allowed,
                path,
                f'annotations.{key}',
                f'annotation {ann_id}: {ann.get(key)!r}',
            )
        key = (img['height'], img['width'])
        polys.setdefault(key, []).append(seg[0])
        poly_ann.setdefault(key, []).append(ann)
        per_image_area[img['id']][cat - 1] += float(ann.get('area', -1))
    for key, group in polys.items():
        areas, boxes = _polygon_stats(group, *key)
        for ann, area, box in zip(poly_ann[key], areas, boxes):
            _require(
                abs(float(ann.get('area', -1)) - area) < 0.5 and area > 0,
                path,
                'annotations.area',
                f'annotation {ann["id"]}: {ann.get("area")!r}, the mask '
                f'of its polygon has {area:.0f} pixels',
            )
            _require(
                np.allclose(ann['bbox'], box),
                path,
                'annotations.bbox',
                f'annotation {ann["id"]}: {ann["bbox"]} is not the tight '
                f'box {box} of its mask',
            )
    empty = [i for i, a in per_image_area.items() if sum(a) <= 0]
    _require(
        not empty, path, 'annotations', f'images without objects: {empty[:5]}'
    )

    # captions -----------------------------------------------------------
    path, cap = paths['captions'], data['captions']
    for key in ('images', 'annotations'):
        _require(isinstance(cap.get(key), list), path, key, 'missing')
    _require(
        [(i.get('id'), i.get('file_name')) for i in cap['images']]
        == [(i['id'], i['file_name']) for i in inst['images']],
        path,
        'images',
        f'differs from the images of {paths["instances"]}',
    )
    by_image: Dict[int, List[str]] = {i: [] for i in images}
    cap_ids = set()
    for ann in cap['annotations']:
        _require(
            ann.get('id') not in cap_ids,
            path,
            'annotations.id',
            f'duplicate id {ann.get("id")!r}',
        )
        cap_ids.add(ann.get('id'))
        text = ann.get('caption')
        _require(
            isinstance(text, str) and text,
            path,
            'annotations.caption',
            f'caption {ann.get("id")}: {text!r}',
        )
        _require(
            ann.get('image_id') in by_image,
            path,
            'annotations.image_id',
            f'caption {ann.get("id")}: unknown image',
        )
        by_image[ann['image_id']].append(text)
    expected = inst.get('info', {}).get('num_captions')
    counts = {len(v) for v in by_image.values()}
    if expected is not None:
        counts.add(expected)
    _require(
        len(counts) == 1 and min(counts) >= 1,
        path,
        'annotations',
        f'captions per image differ: {sorted(counts)}',
    )
    for img_id, texts in by_image.items():
        _require(
            len(set(texts)) == len(texts),
            path,
            'annotations.caption',
            f'image {img_id} has repeated captions',
        )

    # classification / multilabel ----------------------------------------
    order = [i['id'] for i in inst['images']]
    for kind in ('classification', 'multilabel'):
        path, cls = paths[kind], data[kind]
        _require(
            cls.get('metainfo', {}).get('classes') == list(TOY_CLASSES),
            path,
            'metainfo.classes',
            f'expected {list(TOY_CLASSES)}',
        )
        items = cls.get('data_list')
        _require(
            isinstance(items, list) and len(items) == len(order),
            path,
            'data_list',
            f'expected {len(order)} entries',
        )
        for img_id, item in zip(order, items):
            img = images[img_id]
            _require(
                item.get('img_path') == img['file_name'],
                path,
                'data_list.img_path',
                f'{item.get("img_path")!r} != {img["file_name"]!r}',
            )
            areas = per_image_area[img_id]
            if kind == 'classification':
                want: Any = int(np.argmax(areas))
            else:
                want = [k for k, a in enumerate(areas) if a > 0]
            _require(
                item.get('gt_label') == want,
                path,
                'data_list.gt_label',
                f'{img["file_name"]}: {item.get("gt_label")!r}, '
                f'the instances give {want!r}',
            )
    return dict(
        images=len(images),
        annotations=len(inst['annotations']),
        captions=len(cap['annotations']),
    )


def verify_toy_coco(data_root: str) -> Dict[str, Any]:
    """Check a generated toy COCO set for consistency.

    Loads every annotation file and checks image files and sizes (from the
    PNG headers), ids, categories, boxes, polygon areas (recomputed with
    pycocotools), captions per image and the classification and
    multi-label files against the instances.

    Args:
        data_root: The folder passed to :func:`generate_toy_coco`.

    Returns:
        dict: ``{'classes': 5, 'train': {...}, 'val': {...}}`` with the
        numbers of images, annotations and captions of each split.

    Raises:
        FileNotFoundError: If a file is missing (the message names it and
            says how to generate the set).
        ValueError: On an inconsistency (the message names the file and
            the field).
    """
    data_root = str(data_root)
    classes_file = osp.join(data_root, 'classes.txt')
    if not osp.isfile(classes_file):
        raise FileNotFoundError(
            f'toy COCO file {classes_file} is missing; generate the set '
            f'with: {_REGEN_HINT} {data_root}'
        )
    with open(classes_file, encoding='utf-8') as f:
        names = [line.strip() for line in f if line.strip()]
    _require(
        names == list(TOY_CLASSES),
        classes_file,
        'classes',
        f'expected {list(TOY_CLASSES)}, got {names}',
    )
    summary: Dict[str, Any] = dict(classes=len(TOY_CLASSES))
    for split in TOY_SPLITS:
        summary[split] = _verify_split(data_root, split)
    return summary
