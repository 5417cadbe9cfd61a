# Copyright (c) mmvfm contributors. All rights reserved.
"""Check a COCO-style dataset's annotations while mmdet parses them.

mmdet 3.3's ``CocoDataset.parse_data_info`` drops, without a word, boxes
with ``w < 1`` or ``h < 1`` (NaN included) or ``area <= 0``, boxes with no
overlap with the image, and annotations whose ``category_id`` is not among
the categories in use. ``filter_empty_gt`` decides on the raw annotations,
so an image whose only box was dropped trains as pure background; a file
where every box has width 0 trains to the end with ``loss_bbox: 0``.

:func:`install_annotation_check` (run by ``import mmvfm``) wraps mmdet's
``CocoDataset`` itself, so ``ToyCocoDataset``, every subclass that keeps
(or calls through ``super()``) ``load_data_list`` / ``parse_data_info``,
and stock ``type='CocoDataset'`` configs that import mmvfm get the check
with no change. While mmdet parses the file (it is read once), each
annotation that mmdet drops is given the first reason that applies:

- ``degenerate``: w or h < 1, a NaN in the box, or ``area <= 0``;
- ``outside``: no overlap with the image (mmdet's
  ``inter_w * inter_h == 0``);
- ``unknown category``: a ``category_id`` absent from the file's own
  ``categories``.

Boxes of a class that the file has but ``metainfo.classes`` does not
select (training on a subset of classes) are information, not invalid;
``ignore`` annotations are skipped, as mmdet does. After the parse, image
files are checked for existence (local paths only). The dataset logs one
summary per build (a warning naming the first annotation / image ids when
anything was dropped) and raises :class:`AnnotationError`, naming the file
and the counts, when

- more than ``max_invalid_ratio`` of the boxes are invalid, or no valid
  box is left (training sets; a ``test_mode`` set is counted and warned
  about, since the evaluator reads the raw file itself);
- image files are missing (any set: they would fail when sampled);
- ``metainfo.classes`` names a class the file lacks (mmdet numbers the
  labels by the classes it finds: the labels after it would shift).

Options, per dataset (``ann_check=False`` switches the check off)::

    dataset=dict(type='CocoDataset', ...,
                 ann_check=dict(max_invalid_ratio=0.05,
                                drop_all_invalid=False,
                                check_images=True))

or for every dataset built afterwards, in code:
``mmvfm.datasets.annotation_check.DEFAULTS.update(...)`` (``enabled=False``
switches it off everywhere). ``drop_all_invalid=True`` drops an image whose
boxes were all invalid like an empty image under ``filter_empty_gt``;
stock mmdet keeps it as background, and so does the default, which changes
nothing but the messages below the thresholds.

A corrupt image is still found when it is sampled (decoding stays lazy),
but mmcv's ``LoadImageFromFile`` then raises :class:`ImageDecodeError`
naming the file, its ``img_id`` and the annotation file. A truncated or
empty annotation JSON is reported by :func:`~.json_file.json_error`.
"""

import functools
import json
import logging
import math
import os.path as osp
from collections import Counter, defaultdict
from typing import Dict, List, Optional

from mmengine.logging import print_log

from .json_file import json_error

__all__ = [
    'AnnotationError',
    'DEFAULTS',
    'ImageDecodeError',
    'install_annotation_check',
]

# the options of every dataset without its own ``ann_check`` entries
DEFAULTS = dict(
    enabled=True,
    max_invalid_ratio=0.05,
    drop_all_invalid=False,
    check_images=True,
)
INVALID = ('degenerate', 'outside', 'unknown category')
WHY = {
    'degenerate': 'w or h < 1, NaN, or area <= 0',
    'outside': 'no overlap with the image',
    'unknown category': "category_id not in the file's categories",
}
SHOW = 5  # ids named per reason


class AnnotationError(ValueError):
    """A dataset whose annotations would train silently wrong."""


class ImageDecodeError(ValueError):
    """An image file that could not be read or decoded."""


def _options(value) -> Optional[dict]:
    """The check's options from a dataset's ``ann_check`` value.

    Args:
        value (dict | bool | None): ``False``: off; ``True`` / ``None``:
            :data:`DEFAULTS`; a dict: :data:`DEFAULTS` updated by it.

    Returns:
        dict | None: the options; None when the check is off.
    """
    if value is False:
        return None
    options = dict(DEFAULTS)
    if value not in (True, None):
        if not isinstance(value, dict):
            raise TypeError(
                f'ann_check must be a dict, True or False, got {value!r}'
            )
        unknown = set(value) - set(DEFAULTS)
        if unknown:
            raise KeyError(
                f'ann_check: unknown option(s) {sorted(unknown)}; known: '
                f'{sorted(DEFAULTS)}'
            )
        options.update(value)
    ratio = options['max_invalid_ratio']
    if not (isinstance(ratio, (int, float)) and 0 <= ratio <= 1):
        raise ValueError(
            f'ann_check.max_invalid_ratio must be in [0, 1], got {ratio!r}'
        )
    return options if options['enabled'] else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _reason(ann: dict, img: dict, file_cats, selected, ann_file: str):
    """Why mmdet drops ``ann``.

    Args:
        ann (dict): a raw COCO annotation (not ``ignore``).
        img (dict): its raw image info (``width``, ``height``, ``img_id``).
        file_cats (set): the category ids of the file's ``categories``.
        selected (set): the category ids in use (``dataset.cat_ids``).
        ann_file (str): named in the error for a malformed annotation.

    Returns:
        str | None: None when mmdet keeps it; ``'not selected'`` for a
        class of the file outside ``metainfo.classes``; else one of
        :data:`INVALID`. mmdet's own rules decide whether it is dropped;
        the reason is the first that applies in that order.
    """
    bbox, area = ann.get('bbox'), ann.get('area')
    if not (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(_number(v) for v in bbox)
        and _number(area)
    ):
        raise AnnotationError(
            f'{ann_file}: annotation {ann.get("id")} (image '
            f'{img.get("img_id")}): needs "bbox" [x, y, w, h] and "area" '
            f'numbers, got bbox={bbox!r} area={area!r}'
        )
    category = ann.get('category_id')
    if category in file_cats and category not in selected:
        return 'not selected'
    # NOTE: the same arithmetic as mmdet's parse_data_info, so that NaN
    # and inf are dropped (or kept) exactly as mmdet does
    x1, y1, w, h = bbox
    inter_w = max(0, min(x1 + w, img['width']) - max(x1, 0))
    inter_h = max(0, min(y1 + h, img['height']) - max(y1, 0))
    degenerate = area <= 0 or w < 1 or h < 1
    if degenerate or inter_w * inter_h == 0:
        if degenerate or any(math.isnan(v) for v in bbox):
            return 'degenerate'
        return 'outside'
    if category not in file_cats:
        return 'unknown category'
    return None


class _Tally:
    """The counts of one parse of an annotation file.

    Args:
        file_cats (dict): the file's categories, ``{id: {'name': ...}}``.
        selected (list[int]): the category ids in use (``cat_ids``).
    """

    def __init__(self, file_cats: dict, selected: List[int]) -> None:
        self.cat_names = {i: c.get('name') for i, c in file_cats.items()}
        self.file_cats = set(file_cats)
        self.selected = set(selected)
        self.boxes = 0  # of the selected / unknown classes, not ignored
        self.kept = 0
        self.dropped: Counter = Counter()  # boxes per reason
        self.images: Dict[str, set] = defaultdict(set)  # img ids per reason
        self.ann_ids: Dict[str, List] = defaultdict(list)  # first SHOW
        self.img_ids: Dict[str, List] = defaultdict(list)  # first SHOW
        self.unknown_cats: set = set()
        self.unselected_cats: set = set()
        self.lost_all: List = []  # img ids whose boxes were all invalid

    def count(self, raw: dict, ann_file: str) -> None:
        """Count one image's annotations (a ``parse_data_info`` input)."""
        img = raw['raw_img_info']
        img_id = img['img_id']
        kept = invalid = 0
        for ann in raw['raw_ann_info']:
            if ann.get('ignore', False):  # mmdet skips these first
                continue
            reason = _reason(ann, img, self.file_cats, self.selected, ann_file)
            if reason is None:
                kept += 1
                continue
            self.dropped[reason] += 1
            if img_id not in self.images[reason]:
                self.images[reason].add(img_id)
                if len(self.img_ids[reason]) < SHOW:
                    self.img_ids[reason].append(img_id)
            if reason == 'not selected':
                self.unselected_cats.add(ann['category_id'])
                continue
            invalid += 1
            if len(self.ann_ids[reason]) < SHOW:
                self.ann_ids[reason].append(ann.get('id'))
            if reason == 'unknown category':
                self.unknown_cats.add(ann.get('category_id'))
        self.boxes += kept + invalid
        self.kept += kept
        if invalid and not kept:
            self.lost_all.append(img_id)

    @property
    def invalid(self) -> int:
        """int: boxes dropped for one of :data:`INVALID`."""
        return sum(self.dropped[r] for r in INVALID)

    def breakdown(self) -> str:
        """str: per reason, the boxes, images and first ids."""
        parts = []
        for reason in INVALID:
            if not self.dropped[reason]:
                continue
            extra = ''
            if reason == 'unknown category':
                ids = sorted(self.unknown_cats, key=str)
                extra = f'; category ids {ids[:SHOW]}'
            parts.append(
                f'{reason} ({WHY[reason]}): {self.dropped[reason]} boxes in '
                f'{len(self.images[reason])} images (annotation ids '
                f'{self.ann_ids[reason]}, image ids {self.img_ids[reason]}'
                f'{extra})'
            )
        return '; '.join(parts)


def _missing_images(data_list: List[dict], backend_args) -> List[dict]:
    """The data infos whose local image file does not exist."""
    if backend_args and backend_args.get('backend', 'local') != 'local':
        return []
    return [
        d
        for d in data_list
        if d.get('img_path')
        and '://' not in str(d['img_path'])
        and not osp.isfile(str(d['img_path']))
    ]


def _check_classes(dataset, tally: _Tally, name: str) -> None:
    """Refuse ``metainfo.classes`` that name a class the file lacks."""
    classes = list(dataset.metainfo.get('classes') or ())
    if not tally.file_cats:  # an image-info-only (test) file
        return
    names = set(tally.cat_names.values())
    absent = [c for c in classes if c not in names]
    if absent:
        raise AnnotationError(
            f'{name}: metainfo.classes names {len(classes)} classes, '
            f"{len(absent)} of them absent from the file's categories: "
            f'{absent[:SHOW]} (mmdet numbers the labels by the classes it '
            'finds: the labels of the classes after them would shift)'
        )


def _report(dataset, tally: _Tally, data_list: List[dict]) -> None:
    """Log the summary of one build; raise when the file would train (or
    be sampled) wrong.

    Args:
        dataset (CocoDataset): the dataset being built.
        tally (_Tally): the counts of its parse.
        data_list (list[dict]): what ``load_data_list`` returned.
    """
    options = dataset._ann_check
    name = f'{type(dataset).__name__} "{dataset.ann_file}"'
    if options['check_images']:
        missing = _missing_images(data_list, dataset.backend_args)
        if missing:
            first = [(d['img_path'], d.get('img_id')) for d in missing]
            raise AnnotationError(
                f'{name}: {len(missing)} of {len(data_list)} image files do '
                f'not exist, e.g. (path, img_id) {first[:SHOW]}: the '
                'annotation file refers to them and they would fail when '
                'sampled, possibly hours in. Fix data_root / data_prefix, '
                'or set ann_check.check_images=False.'
            )
    _check_classes(dataset, tally, name)
    boxes, invalid = tally.boxes, tally.invalid
    share = invalid / boxes if boxes else 0.0
    ratio = options['max_invalid_ratio']
    train = not dataset.test_mode
    if train and boxes and not tally.kept:
        raise AnnotationError(
            f'{name}: no valid box is left: all {boxes} boxes are invalid '
            f'({tally.breakdown()}). mmdet would drop them silently and '
            'train on background only.'
        )
    if train and share > ratio:
        raise AnnotationError(
            f'{name}: {invalid} of {boxes} boxes ({100 * share:.1f} %) are '
            f'invalid, more than ann_check.max_invalid_ratio={ratio} '
            f'({tally.breakdown()}). mmdet would drop them silently. Fix the '
            'file, or raise ann_check.max_invalid_ratio to train without '
            'them.'
        )
    lines = [
        f'annotation check of {name}: {tally.kept} of {boxes} boxes kept '
        f'in {len(data_list)} images'
    ]
    if invalid:
        refused = (
            f'at most {100 * ratio:g} % allowed'
            if train
            else 'test_mode: not refused, the evaluator reads the raw file'
        )
        lines.append(
            f'dropped {invalid} invalid boxes ({100 * share:.2f} %, '
            f'{refused}): {tally.breakdown()}'
        )
    if tally.lost_all:
        filter_empty = (dataset.filter_cfg or {}).get('filter_empty_gt')
        if not train:
            action = 'kept (test_mode)'
        elif options['drop_all_invalid'] and filter_empty:
            action = 'dropped (ann_check.drop_all_invalid=True)'
        elif options['drop_all_invalid']:
            action = (
                'kept as background: ann_check.drop_all_invalid acts under '
                'filter_cfg.filter_empty_gt=True, which is off'
            )
        else:
            action = (
                'they train as background (stock mmdet behaviour); set '
                'ann_check.drop_all_invalid=True to drop them'
            )
        lines.append(
            f'{len(tally.lost_all)} images lost all their boxes (image ids '
            f'{tally.lost_all[:SHOW]}): {action}'
        )
    print_log(
        '\n  '.join(lines),
        logger='current',
        level=logging.WARNING if invalid else logging.INFO,
    )
    if tally.dropped['not selected']:
        cats = sorted(tally.unselected_cats, key=str)
        print_log(
            f'{name}: {tally.dropped["not selected"]} boxes in '
            f'{len(tally.images["not selected"])} images are of '
            f'{len(cats)} classes not selected by metainfo.classes (e.g. '
            f'{[tally.cat_names[c] for c in cats[:SHOW]]}) and are left out: '
            'training on a subset of classes, information, not an error',
            logger='current',
        )


def _wrap_init(init):
    @functools.wraps(init)
    def __init__(self, *args, ann_check=None, **kwargs):
        # popped here: BaseDetDataset.__init__ rejects unknown kwargs
        self._ann_check = _options(ann_check)
        self._ann_lost_all = set()
        init(self, *args, **kwargs)

    return __init__


def _wrap_load_data_list(load):
    @functools.wraps(load)
    def load_data_list(self):
        counting = getattr(self, '_ann_check', None) is not None and not (
            getattr(self, '_ann_counting', False)
        )
        if counting:
            self._ann_counting, self._ann_tally = True, None
        try:  # the JSON error even with the check off
            data_list = load(self)
            tally = self._ann_tally if counting else None
        except json.JSONDecodeError as e:
            raise json_error(self.ann_file, e) from None
        finally:
            if counting:
                self._ann_counting, self._ann_tally = False, None
        if tally is not None:  # None: off, or a subclass parses by itself
            _report(self, tally, data_list)
            self._ann_lost_all = set(tally.lost_all)
        return data_list

    return load_data_list


def _wrap_parse_data_info(parse):
    @functools.wraps(parse)
    def parse_data_info(self, raw_data_info):
        # counts only within our load_data_list, where mmdet holds self.coco
        if getattr(self, '_ann_counting', False) and hasattr(self, 'coco'):
            if self._ann_tally is None:
                self._ann_tally = _Tally(self.coco.cats, self.cat_ids)
            self._ann_tally.count(raw_data_info, self.ann_file)
        return parse(self, raw_data_info)

    return parse_data_info


def _wrap_filter_data(filter_data):
    @functools.wraps(filter_data)
    def filter_data_(self):
        kept = filter_data(self)
        options = getattr(self, '_ann_check', None)
        lost = getattr(self, '_ann_lost_all', None)
        if (
            options is None
            or not options['drop_all_invalid']
            or not lost
            or self.test_mode
            or not (self.filter_cfg or {}).get('filter_empty_gt', False)
        ):
            return kept
        return [d for d in kept if d['img_id'] not in lost]

    return filter_data_


def _wrap_prepare_data(prepare):
    @functools.wraps(prepare)
    def prepare_data(self, idx):
        try:
            return prepare(self, idx)
        except ImageDecodeError as e:
            raise ImageDecodeError(
                f'{e} (listed in annotation file "{self.ann_file}")'
            ) from None

    return prepare_data


def _wrap_load_image(transform):
    @functools.wraps(transform)
    def load_image(self, results):
        try:
            return transform(self, results)
        except ImageDecodeError:
            raise
        except Exception as e:
            # mmcv asserts that the decoder returned an image (under
            # ``python -O`` the None fails on ``img.shape`` instead)
            none = isinstance(e, AssertionError) or "'NoneType'" in str(e)
            cause = (
                'the decoder returned no image (corrupt or not an image?)'
                if none
                else f'{type(e).__name__}: {e}'
            )
            raise ImageDecodeError(
                f'image "{results.get("img_path")}" (img_id '
                f'{results.get("img_id")}) could not be read or decoded: '
                f'{cause}'
            ) from e

    return load_image


def install_annotation_check() -> bool:
    """Wrap mmdet's ``CocoDataset`` (``__init__``, ``load_data_list``,
    ``parse_data_info``, ``filter_data``, ``prepare_data``) and mmcv's
    ``LoadImageFromFile.transform``, once: a second call (or a reload of
    this module) finds the marks and changes nothing.

    Returns:
        bool: whether anything was wrapped.
    """
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset

    changed = False
    for owner, name, wrap in (
        (CocoDataset, '__init__', _wrap_init),
        (CocoDataset, 'load_data_list', _wrap_load_data_list),
        (CocoDataset, 'parse_data_info', _wrap_parse_data_info),
        (CocoDataset, 'filter_data', _wrap_filter_data),
        (CocoDataset, 'prepare_data', _wrap_prepare_data),
        (LoadImageFromFile, 'transform', _wrap_load_image),
    ):
        current = getattr(owner, name)
        if getattr(current, '_mmvfm_ann_check', False):
            continue
        wrapped = wrap(current)
        wrapped._mmvfm_ann_check = True
        setattr(owner, name, wrapped)
        changed = True
    return changed
