# Copyright (c) mmvfm contributors. All rights reserved.
"""The json writers and :func:`generate_toy_coco`."""

from __future__ import annotations

import json
import os
import os.path as osp
import shutil
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from .captions import _captions
from .common import (
    _ANN_KINDS,
    _VERSION,
    TOY_CLASSES,
    TOY_DOMAINS,
    TOY_SPLITS,
    FloatPair,
    IntPair,
    _float_pair,
    _int_pair,
    _is_int,
)
from .painting import _make_image

# first entry of the SeedSequence spawn key of an image: the split in
# domain (as it always was), 2 + the split out of domain, so an ood set
# is not a recoloured copy of the in-domain set of the same seed
_SPLIT_CODES = {'train': 0, 'val': 1}
_STREAM_CODES = {
    (domain, split): 2 * d + code
    for d, domain in enumerate(TOY_DOMAINS)
    for split, code in _SPLIT_CODES.items()
}
_DESCRIPTIONS = {
    'in': 'mmvfm toy COCO: coloured shapes on a textured background',
    'ood': 'mmvfm toy COCO, out of domain: patterned shapes in new colours '
    'on a striped, checkered or gradient background',
}
# caption words for the background of an ood image (family -> adjective)
_OOD_BACKGROUND_WORDS = {
    'stripes': 'striped',
    'checker': 'checkered',
    'gradient': 'gradient',
}


def _check_args(
    num_train: int,
    num_val: int,
    img_size: IntPair,
    num_objects: IntPair,
    obj_size: FloatPair,
    num_captions: int,
    seed: int,
    domain: str = 'in',
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
    if not isinstance(domain, str) or domain not in TOY_DOMAINS:
        raise ValueError(
            f'domain must be one of {TOY_DOMAINS}, got {domain!r}'
        )
    return size, nobj, osize


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
    domain: str = 'in',
) -> Dict[str, Any]:
    """Write the images and annotation files of one split."""
    ood = domain != 'in'
    img_dir = osp.join(out_dir, split)
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    info = dict(
        description=_DESCRIPTIONS[domain],
        version=_VERSION,
        split=split,
        seed=seed,
        num_images=num_images,
        img_size=list(img_size),
        num_objects=list(num_objects),
        obj_size=list(obj_size),
        num_captions=num_captions,
    )
    if ood:  # the in-domain files stay as they always were
        info['domain'] = domain
    images, anns, caps, cls_list, ml_list = [], [], [], [], []
    bar = None
    if progress:
        from mmengine.utils import ProgressBar

        print(f'generating {num_images} {split} images')
        bar = ProgressBar(num_images)
    for idx in range(num_images):
        image_id = idx + 1
        seq = np.random.SeedSequence(
            entropy=seed, spawn_key=(_STREAM_CODES[domain, split], idx)
        )
        img_rng, cap_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        image, objects, background = _make_image(
            img_rng, img_size, num_objects, obj_size, domain
        )
        height, width = image.shape[:2]
        file_name = f'{split}/{image_id:06d}.png'
        cv2.imwrite(
            osp.join(out_dir, file_name),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        )
        img_info = dict(
            id=image_id, file_name=file_name, width=width, height=height
        )
        if ood:
            img_info['background'] = background
        images.append(img_info)
        for obj in objects:
            ann = dict(
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
            if ood:
                ann['style'] = obj['style']
            anns.append(ann)
        words: Dict[str, str] = {}
        if ood:
            adjective = _OOD_BACKGROUND_WORDS[background]
            words = dict(background=adjective, scene=f'light {adjective}')
        for caption in _captions(objects, num_captions, cap_rng, **words):
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
    domain: str = 'in',
) -> Dict[str, Any]:
    """Generate the toy COCO dataset.

    The same arguments always give byte-identical files. Every image has
    its own random generator derived from ``(seed, domain, split,
    index)``, so the val split does not depend on ``num_train`` and the
    first images of a split do not depend on its length.

    **Domains.** ``domain='in'`` (the default) is the set this function
    has always written, byte for byte. ``domain='ood'`` writes an
    out-of-domain set for evaluating a model tuned in domain: the same 5
    classes, shape geometry, sizes, placement rules, layout statistics,
    files and json formats, but an appearance the in-domain set never
    shows:

    * **colours**: the objects take the 8 colours of
      :data:`TOY_OOD_COLORS` (pink, brown, lime, teal, navy, maroon,
      black, olive) instead of :data:`TOY_COLORS` (red, green, blue,
      yellow, purple, orange, cyan, white); names and RGB values are
      disjoint (every pair >= 70 apart on some channel) and each
      annotation's ``color`` and every caption use the new names;
    * **background**: instead of a dark (channels 40-140), smooth noise
      texture with fine grain, a light (channels 120-235), noise-free
      pastel pattern of two tones: stripes, a checkerboard or a linear
      gradient (:data:`OOD_BACKGROUNDS`), recorded as ``background`` on
      each image entry;
    * **object style**: instead of one flat colour, a two-tone pattern
      (:data:`OOD_STYLES`): ``striped``, ``checkered`` or ``outlined`` (a
      darker rim inside the shape), recorded as ``style`` on each
      annotation. The patterns fill the whole shape, so the object still
      covers exactly the pixels of its mask: masks, areas and boxes stay
      exact (no hollow shapes, whose mask would include background
      pixels, and whose outlined circle would look like a ring);
    * **captions**: the same templates, naming the new colours; the
      templates that mention the background say ``striped``,
      ``checkered`` or ``gradient`` (``a light striped scene``) instead
      of ``textured`` (``a dark textured scene``);
    * **random streams**: independent of the in-domain ones, so an ood
      set is not a recoloured copy of the in-domain set of the same
      seed; ``info`` of the instances and captions files has
      ``domain='ood'`` and another ``description``.

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
        domain: ``'in'`` or ``'ood'``, see above.

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
        num_train,
        num_val,
        img_size,
        num_objects,
        obj_size,
        num_captions,
        seed,
        domain,
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
            domain,
        )
    classes_file = osp.join(out_dir, 'classes.txt')
    with open(classes_file, 'w', encoding='utf-8') as f:
        f.write('\n'.join(TOY_CLASSES) + '\n')
    result['classes_file'] = classes_file
    return result
