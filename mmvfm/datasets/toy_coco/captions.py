# Copyright (c) mmvfm contributors. All rights reserved.
"""Caption templates, class synonyms and position/size words."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from .common import POSITIONS, TOY_CLASSES

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
# background words of the templates that mention the background
_IN_BACKGROUND = 'textured'
_IN_SCENE = 'dark textured'


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
    objects: List[Dict[str, Any]],
    rng: np.random.Generator,
    exact: bool,
    background: str = _IN_BACKGROUND,
    scene: str = _IN_SCENE,
) -> str:
    """Build one caption naming every object.

    Args:
        objects: Object dicts with ``category_id``, ``color``, ``size``,
            ``position``, ``bbox`` and ``area``.
        rng: Random generator.
        exact: Use the exact class names, reading order and the plain
            template (for the first caption of an image).
        background: Adjective of the background in the templates that
            mention it (``... on a textured background``).
        scene: Adjectives of the background in the ``a ... scene
            containing`` template.
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
    bg = f'{_article(background)} {background} background'
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
        caption = f'{listed} on {bg}'
    elif template == 6:
        caption = f'{bg} with {listed}'
    elif template == 7:
        caption = f'{_count_phrase(n, rng)} on {bg}: {listed}'
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
        caption = f'{_article(scene)} {scene} scene containing {listed}'
    return caption


def _captions(
    objects: List[Dict[str, Any]],
    num: int,
    rng: np.random.Generator,
    background: str = _IN_BACKGROUND,
    scene: str = _IN_SCENE,
) -> List[str]:
    """``num`` different captions of one image; the first is exact.

    ``background`` and ``scene`` are passed to :func:`_one_caption`.
    """
    captions = [_one_caption(objects, rng, exact=True)]
    seen = set(captions)
    tries = 0
    while len(captions) < num:
        tries += 1
        if tries > 2000:  # pragma: no cover - far more variants exist
            raise RuntimeError(f'could not make {num} different captions')
        caption = _one_caption(
            objects, rng, exact=False, background=background, scene=scene
        )
        if caption not in seen:
            seen.add(caption)
            captions.append(caption)
    return captions
