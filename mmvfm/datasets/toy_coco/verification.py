# Copyright (c) mmvfm contributors. All rights reserved.
"""Consistency checks of a generated toy COCO set."""

from __future__ import annotations

import json
import os.path as osp
import struct
from typing import Any, Dict, List, Tuple

import numpy as np

from .common import (
    _ANN_KINDS,
    _REGEN_HINT,
    POSITIONS,
    SIZE_WORDS,
    TOY_CLASSES,
    TOY_DOMAINS,
    TOY_SPLITS,
    _is_int,
)
from .painting import (
    OOD_BACKGROUNDS,
    OOD_STYLES,
    TOY_COLORS,
    TOY_OOD_COLORS,
    _polygon_stats,
)


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
    domain = (inst.get('info') or {}).get('domain', 'in')
    _require(
        domain in TOY_DOMAINS,
        path,
        'info.domain',
        f'expected one of {TOY_DOMAINS}, got {domain!r}',
    )
    ood = domain == 'ood'
    colors = TOY_OOD_COLORS if ood else TOY_COLORS
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
        if ood:
            _require(
                img.get('background') in OOD_BACKGROUNDS,
                path,
                'images.background',
                f'image {img_id}: {img.get("background")!r}',
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
        checks: List[Tuple[str, Any]] = [
            ('color', colors),
            ('size', SIZE_WORDS),
            ('position', POSITIONS),
        ]
        if ood:
            checks.append(('style', OOD_STYLES))
        for key, allowed in checks:
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
    multi-label files against the instances. The domain comes from
    ``info.domain`` of the instances files (``'in'`` when absent): it
    selects the allowed ``color`` names, and out of domain each image
    needs a ``background`` and each annotation a ``style``.

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
