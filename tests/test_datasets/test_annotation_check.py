# Copyright (c) mmvfm contributors. All rights reserved.
"""The annotation check of every CocoDataset (mmvfm.datasets.
annotation_check): each probe of the reliability issue, on a copy of the
tiny toy set with one thing broken at a time. mmdet alone drops these
boxes without a word; here they are counted, named, and refused past the
threshold."""

import json
import logging
import os.path as osp
import shutil

import pytest
from conftest import load_tool
from mmengine.logging import MMLogger

from mmvfm.datasets import TOY_CLASSES
from mmvfm.datasets.annotation_check import (
    DEFAULTS,
    AnnotationError,
    ImageDecodeError,
)

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture
def ann(toy_root):
    with open(osp.join(toy_root, 'annotations/instances_train.json')) as f:
        return json.load(f)


@pytest.fixture
def logs():
    """The messages of mmengine's current logger during the test."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelno, record.getMessage()))

    logger = MMLogger.get_current_instance()
    handler = Keep()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def build(toy_root, tmp_path, ann, type='CocoDataset', **kwargs):
    from mmdet.registry import DATASETS

    path = str(tmp_path / 'instances.json')
    with open(path, 'w') as f:
        json.dump(ann, f)
    cfg = dict(
        type=type,
        data_root=toy_root,
        ann_file=path,
        data_prefix=dict(img=''),
        metainfo=dict(classes=TOY_CLASSES),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=[],
    )
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def first_box_per_image(ann) -> list:
    seen, firsts = set(), []
    for a in ann['annotations']:
        if a['image_id'] not in seen:
            seen.add(a['image_id'])
            firsts.append(a)
    return firsts


def test_valid_set_logs_a_summary_and_keeps_everything(
    toy_root, tmp_path, ann, logs
):
    ds = build(toy_root, tmp_path, ann)
    boxes = sum(len(d['instances']) for d in ds)
    assert boxes == len(ann['annotations'])
    summary = [m for _, m in logs if 'annotation check of' in m]
    assert summary and f'{boxes} of {boxes} boxes kept' in summary[0]
    assert all(level < logging.WARNING for level, _ in logs)


def test_first_box_width_zero_warns_then_refuses(
    toy_root, tmp_path, ann, logs
):
    firsts = first_box_per_image(ann)
    for a in firsts:
        a['bbox'][2] = 0
    total = len(ann['annotations'])
    with pytest.raises(AnnotationError) as e:
        build(toy_root, tmp_path, ann)
    message = str(e.value)
    assert str(tmp_path / 'instances.json') in message
    assert f'{len(firsts)} of {total} boxes' in message
    assert 'degenerate' in message and str(firsts[0]['id']) in message
    # past the threshold it trains, and says what it dropped
    ds = build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=1))
    assert sum(len(d['instances']) for d in ds) == total - len(firsts)
    warning = [m for lv, m in logs if lv == logging.WARNING]
    assert warning and f'dropped {len(firsts)} invalid boxes' in warning[0]
    lost = {a['image_id'] for a in ann['annotations']} - {
        a['image_id'] for a in ann['annotations'] if a['bbox'][2] > 0
    }
    assert lost, 'the tiny set has images with one box'
    assert f'{len(lost)} images lost all their boxes' in warning[0]
    assert 'stock mmdet behaviour' in warning[0]
    # stock behaviour: those images stay, as background
    assert {d['img_id'] for d in ds} >= lost
    dropped = build(
        toy_root,
        tmp_path,
        ann,
        ann_check=dict(max_invalid_ratio=1, drop_all_invalid=True),
    )
    assert not ({d['img_id'] for d in dropped} & lost)
    assert len(dropped) == len(ds) - len(lost)


@pytest.mark.parametrize(
    'break_box, reason',
    [
        (lambda a: a['bbox'].__setitem__(2, 0), 'degenerate'),
        (lambda a: a['bbox'].__setitem__(3, -5), 'degenerate'),
        (lambda a: a['bbox'].__setitem__(2, float('nan')), 'degenerate'),
        (lambda a: a.__setitem__('area', 0), 'degenerate'),
        (lambda a: a['bbox'].__setitem__(0, 10_000), 'outside'),
        (lambda a: a.__setitem__('category_id', 99), 'unknown category'),
    ],
)
def test_every_box_broken_is_refused(
    toy_root, tmp_path, ann, break_box, reason
):
    for a in ann['annotations']:
        break_box(a)
    with pytest.raises(AnnotationError, match=reason) as e:
        build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=1))
    assert 'no valid box is left' in str(e.value)
    if reason == 'unknown category':
        assert 'category ids [99]' in str(e.value)


def test_every_box_width_zero_at_the_default_threshold(
    toy_root, tmp_path, ann
):
    for a in ann['annotations']:
        a['bbox'][2] = 0
    with pytest.raises(AnnotationError, match='no valid box is left'):
        build(toy_root, tmp_path, ann)


def test_counts_match_what_mmdet_drops(toy_root, tmp_path, ann, logs):
    """One box broken per kind (NaN x, inf x, NaN area: mmdet keeps the
    last): the check's kept count is mmdet's own, and a NaN in the box is
    degenerate, not outside."""
    anns = ann['annotations']
    anns[0]['bbox'][2] = 0.5
    anns[1]['bbox'][0] = float('nan')
    anns[2]['bbox'][0] = float('inf')
    anns[3]['bbox'][1] = -1000
    anns[4]['area'] = float('nan')  # area is not used: mmdet keeps it
    anns[5]['category_id'] = 99
    stock = build(toy_root, tmp_path, ann, ann_check=False)
    kept = sum(len(d['instances']) for d in stock)
    assert kept == len(anns) - 5
    build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=1))
    (warning,) = [m for lv, m in logs if lv == logging.WARNING]
    assert f'{kept} of {len(anns)} boxes kept' in warning
    assert 'degenerate (w or h < 1, NaN, or area <= 0): 2 boxes' in warning
    assert 'outside (no overlap with the image): 2 boxes' in warning
    assert 'unknown category' in warning and '[99]' in warning
    summaries = [m for _, m in logs if 'annotation check of' in m]
    assert len(summaries) == 1, 'one summary per build'


def test_test_mode_is_counted_and_warned_not_refused(
    toy_root, tmp_path, ann, logs
):
    for a in ann['annotations']:
        a['bbox'][2] = 0
    ds = build(toy_root, tmp_path, ann, test_mode=True)
    assert len(ds) == len(ann['images'])
    (warning,) = [m for lv, m in logs if lv == logging.WARNING]
    assert 'test_mode: not refused' in warning
    assert f'dropped {len(ann["annotations"])} invalid boxes' in warning


def test_unknown_category_is_counted_and_named(toy_root, tmp_path, ann):
    victims = ann['annotations'][:1]
    for a in victims:
        a['category_id'] = 99
    ds = build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=1))
    assert sum(len(d['instances']) for d in ds) == len(ann['annotations']) - 1
    with pytest.raises(AnnotationError, match=r'category ids \[99\]'):
        build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=0))


def test_a_subset_of_classes_is_information(toy_root, tmp_path, ann, logs):
    ds = build(toy_root, tmp_path, ann, metainfo=dict(classes=TOY_CLASSES[:2]))
    assert len(ds) > 0
    infos = [m for lv, m in logs if 'not selected' in m]
    assert infos and 'information, not an error' in infos[0]
    assert all(level < logging.WARNING for level, _ in logs)


def test_broken_boxes_of_unselected_classes_are_not_invalid(
    toy_root, tmp_path, ann, logs
):
    """Training on a subset: the other classes' boxes are left out
    whatever their shape, and do not count against the threshold."""
    classes = TOY_CLASSES[:2]
    ids = {c['id'] for c in ann['categories'] if c['name'] in classes}
    for a in ann['annotations']:
        if a['category_id'] not in ids:
            a['bbox'][2] = 0
    build(toy_root, tmp_path, ann, metainfo=dict(classes=classes))
    assert all(level < logging.WARNING for level, _ in logs)


def test_a_class_absent_from_the_file_is_refused(toy_root, tmp_path, ann):
    """mmdet numbers labels by the classes it finds: a missing name would
    shift the labels of the classes after it."""
    classes = ('circle', 'hexagon', *TOY_CLASSES[1:])
    with pytest.raises(AnnotationError, match="'hexagon'"):
        build(toy_root, tmp_path, ann, metainfo=dict(classes=classes))


def test_missing_image_file_is_named_at_build(toy_root, tmp_path, ann):
    ann['images'][0]['file_name'] = 'train/not_there.png'
    with pytest.raises(AnnotationError, match='not_there.png'):
        build(toy_root, tmp_path, ann)
    build(toy_root, tmp_path, ann, ann_check=dict(check_images=False))


def test_corrupt_image_names_file_and_image_id(toy_root, tmp_path, ann):
    root = tmp_path / 'toy'
    shutil.copytree(toy_root, root)
    victim = ann['images'][0]
    (root / victim['file_name']).write_bytes(b'\x89PNG not an image')
    ds = build(
        str(root),
        tmp_path,
        ann,
        pipeline=[dict(type='LoadImageFromFile')],
        test_mode=True,
    )
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    index = ids.index(victim['id'])
    with pytest.raises(ImageDecodeError) as e:
        ds[index]
    message = str(e.value)
    assert victim['file_name'] in message
    assert f'img_id {victim["id"]}' in message
    assert 'instances.json' in message
    assert ds[(index + 1) % len(ds)]['img'] is not None


@pytest.mark.parametrize('kind', ['truncated', 'empty'])
def test_broken_json_names_the_file(toy_root, tmp_path, ann, kind):
    from mmdet.registry import DATASETS

    path = tmp_path / 'instances.json'
    text = json.dumps(ann)
    path.write_text(text[: len(text) // 2] if kind == 'truncated' else '')
    cfg = dict(
        type='CocoDataset',
        data_root=toy_root,
        ann_file=str(path),
        data_prefix=dict(img=''),
        pipeline=[],
    )
    for ann_check in (True, False):  # the JSON error even with it off
        with pytest.raises(ValueError) as e:
            DATASETS.build(dict(cfg, ann_check=ann_check))
        message = str(e.value)
        assert str(path) in message and 'not valid JSON' in message
        if kind == 'truncated':
            assert 'truncated?' in message and 'line 1 column' in message
        else:
            assert 'is empty (0 bytes)' in message


def test_off_is_stock_behaviour(toy_root, tmp_path, ann):
    for a in ann['annotations']:
        a['bbox'][2] = 0
    ds = build(toy_root, tmp_path, ann, ann_check=False)
    assert sum(len(d['instances']) for d in ds) == 0


def test_defaults_apply_to_every_dataset(toy_root, tmp_path, ann, monkeypatch):
    for a in first_box_per_image(ann):
        a['bbox'][2] = 0
    monkeypatch.setitem(DEFAULTS, 'max_invalid_ratio', 1.0)
    build(toy_root, tmp_path, ann)  # allowed by the global default
    monkeypatch.setitem(DEFAULTS, 'enabled', False)
    build(toy_root, tmp_path, ann, ann_check=dict(max_invalid_ratio=0))
    with pytest.raises(KeyError, match='unknown option'):
        build(toy_root, tmp_path, ann, ann_check=dict(ratio=1))


def test_drop_all_invalid_acts_under_filter_empty_gt(
    toy_root, tmp_path, ann, logs
):
    for a in first_box_per_image(ann):
        a['bbox'][2] = 0
    ds = build(
        toy_root,
        tmp_path,
        ann,
        filter_cfg=dict(filter_empty_gt=False),
        ann_check=dict(max_invalid_ratio=1, drop_all_invalid=True),
    )
    assert len(ds) == len(ann['images'])
    (warning,) = [m for lv, m in logs if lv == logging.WARNING]
    assert 'filter_cfg.filter_empty_gt=True, which is off' in warning


def test_install_is_idempotent():
    from mmdet.datasets import CocoDataset

    from mmvfm.datasets.annotation_check import install_annotation_check

    before = CocoDataset.parse_data_info
    assert install_annotation_check() is False
    assert CocoDataset.parse_data_info is before


def test_toy_dataset_and_an_image_only_test_file(toy_root, tmp_path, ann):
    build(toy_root, tmp_path, ann, type='ToyCocoDataset', metainfo=None)
    info_only = dict(images=ann['images'], categories=ann['categories'])
    ds = build(toy_root, tmp_path, info_only, test_mode=True)
    assert len(ds) == len(ann['images'])


def test_train_tool_stops_on_an_all_zero_width_file(toy_root, tmp_path, ann):
    """Before: every box of width 0 trained to the end with loss_bbox 0
    and exit code 0."""
    from conftest import tiny_detector_cfg

    for a in ann['annotations']:
        a['bbox'][2] = 0
    path = str(tmp_path / 'zero_width.json')
    with open(path, 'w') as f:
        json.dump(ann, f)
    cfg = tiny_detector_cfg(
        toy_root, str(tmp_path / 'work'), max_iters=1, name='zero_width'
    )
    cfg.train_dataloader.dataset.ann_file = path
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    with pytest.raises(SystemExit, match='zero_width.json') as e:
        load_tool('train.py').main([cfg_path])
    assert 'no valid box' in str(e.value) or 'invalid' in str(e.value)


def test_captions_json_only_and_named(tmp_path):
    from mmvfm.datasets import CocoImageCaptionsDataset

    pkl = tmp_path / 'captions.pkl'
    pkl.write_bytes(b'\x80\x04N.')
    with pytest.raises(ValueError, match='must be a .json file'):
        CocoImageCaptionsDataset(ann_file=str(pkl))
    broken = tmp_path / 'captions.json'
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match='not valid JSON') as e:
        CocoImageCaptionsDataset(ann_file=str(broken))
    assert str(broken) in str(e.value)
