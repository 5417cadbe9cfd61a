# Copyright (c) mmvfm contributors. All rights reserved.
"""Tests of the toy COCO generator (small sets only)."""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmvfm.datasets.toy_coco import (
    TOY_CLASSES,
    TOY_COLORS,
    TOY_PALETTE,
    generate_toy_coco,
    verify_toy_coco,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL = dict(num_train=12, num_val=4, img_size=(48, 64), num_captions=5)
# sha256 of the annotation files of a tiny set, computed with the single
# module ``mmvfm/datasets/toy_coco.py`` before it was split into a
# package: the split (and any later change meant to keep the in-domain
# data) must leave them unchanged. Only the json files: PNG bytes may
# depend on the OpenCV/zlib build.
GOLDEN_ARGS = dict(
    num_train=3, num_val=2, img_size=(40, 56), num_captions=3, seed=0
)
GOLDEN_SHA256 = {
    'annotations/captions_train.json': (
        '4cb0ea684cc3bea6ee8b7a18f9405e508c35218e0b63523de40f82ba3ece1d2e'
    ),
    'annotations/captions_val.json': (
        '596fa1a446e64b8ddebb8d49373b280dbef110538869fa5aae1d8c30d3aa573d'
    ),
    'annotations/classification_train.json': (
        '8f9558b6db7192077bd7dd9c693776fc5eb9b6c06cdb1da61065ee1667df6959'
    ),
    'annotations/classification_val.json': (
        '5eb404367fa64a84d44c0b35a74207f65922c0ab97da8c5e6a82600802d8a6c6'
    ),
    'annotations/instances_train.json': (
        '7970eccb69df5289ef97e4de7516edaae011dd63691d8b67cf5eda111a0fd509'
    ),
    'annotations/instances_val.json': (
        '174a2c1bcb1549b9ed2df75ef09dd6a5e9dc3c0df6339aad1701ce9f4915e565'
    ),
    'annotations/multilabel_train.json': (
        'bd4fa5cd67d34fb14ddb248ef1202c2631aad3efc1808bd1d8ed8b9925f4dd02'
    ),
    'annotations/multilabel_val.json': (
        '7e8a29e1e655bb0a74d460b389a9d4a5c34893460ae939b452ad84591d84a10b'
    ),
}


def _hashes(root: str) -> Dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return out


def _load(root: str, name: str) -> dict:
    with open(osp.join(root, 'annotations', name)) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('toy') / 'toy_coco')
    generate_toy_coco(root, seed=0, **SMALL)
    return root


def test_constants():
    assert TOY_CLASSES == ('circle', 'square', 'triangle', 'ring', 'cross')
    assert len(TOY_PALETTE) == len(TOY_CLASSES)
    assert len(TOY_COLORS) >= 8
    assert len(set(TOY_COLORS.values())) == len(TOY_COLORS)


def test_layout_and_return(tmp_path):
    res = generate_toy_coco(
        str(tmp_path / 'd'), num_train=3, num_val=2, img_size=40
    )
    assert res['train']['num_images'] == 3
    assert res['val']['num_images'] == 2
    for split in ('train', 'val'):
        for kind in ('instances', 'captions', 'classification', 'multilabel'):
            assert osp.isfile(res[split][kind])
        assert res[split]['num_captions'] == 5 * res[split]['num_images']
    with open(res['classes_file']) as f:
        assert f.read().split() == list(TOY_CLASSES)
    inst = _load(str(tmp_path / 'd'), 'instances_train.json')
    assert [i['id'] for i in inst['images']] == [1, 2, 3]
    assert inst['images'][0]['file_name'] == 'train/000001.png'
    # a single int means a fixed square size
    assert all(i['width'] == i['height'] == 40 for i in inst['images'])
    assert [c['supercategory'] for c in inst['categories']] == ['shape'] * 5


def test_deterministic(tmp_path, toy_root):
    other = str(tmp_path / 'again')
    generate_toy_coco(other, seed=0, **SMALL)
    assert _hashes(other) == _hashes(toy_root)


def test_golden_annotations(tmp_path):
    first = str(tmp_path / 'first')
    generate_toy_coco(first, **GOLDEN_ARGS)
    hashes = _hashes(first)
    got = {k: v for k, v in hashes.items() if k.startswith('annotations/')}
    assert got == GOLDEN_SHA256
    # generated again (with the default domain spelled out): every file,
    # images included, is the same
    second = str(tmp_path / 'second')
    generate_toy_coco(second, domain='in', **GOLDEN_ARGS)
    assert _hashes(second) == hashes


def test_seed_and_split_independence(tmp_path, toy_root):
    other = str(tmp_path / 'seed1')
    generate_toy_coco(other, seed=1, **SMALL)
    a, b = _hashes(toy_root), _hashes(other)
    assert a.keys() == b.keys()
    assert a['train/000001.png'] != b['train/000001.png']
    assert (
        a['annotations/instances_train.json']
        != b['annotations/instances_train.json']
    )
    # changing num_train leaves the val split unchanged
    fewer = str(tmp_path / 'fewer')
    generate_toy_coco(fewer, seed=0, **{**SMALL, 'num_train': 5})
    c = _hashes(fewer)
    same = [k for k in a if k.startswith('val/') or k.endswith('val.json')]
    same += [f'train/{i:06d}.png' for i in range(1, 6)]
    for key in same:
        assert c[key] == a[key], key


def test_sizes_vary(toy_root):
    inst = _load(toy_root, 'instances_train.json')
    sizes = {(i['width'], i['height']) for i in inst['images']}
    assert len(sizes) > 1
    for img in inst['images']:
        assert 48 <= img['width'] <= 64 and 48 <= img['height'] <= 64
        im = cv2.imread(osp.join(toy_root, img['file_name']))
        assert im.shape[:2] == (img['height'], img['width'])


def test_masks_match_pixels(toy_root):
    coco = COCO(osp.join(toy_root, 'annotations', 'instances_train.json'))
    assert len(coco.getCatIds()) == 5
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        im = cv2.cvtColor(
            cv2.imread(osp.join(toy_root, info['file_name'])),
            cv2.COLOR_BGR2RGB,
        ).astype(int)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 4
        union = np.zeros(im.shape[:2], int)
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            union += mask
            assert mask.sum() == ann['area'] > 0
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert w >= 1 and h >= 1
            # the box is the tight box of the mask ...
            assert [x, y, x + w, y + h] == [
                xs.min(),
                ys.min(),
                xs.max() + 1,
                ys.max() + 1,
            ]
            # ... and close to the box of the polygon
            poly = np.array(ann['segmentation'][0]).reshape(-1, 2)
            assert (
                np.abs(
                    np.r_[poly.min(0), poly.max(0)] - [x, y, x + w, y + h]
                ).max()
                <= 1.5
            )
            assert x >= 0 and y >= 0
            assert x + w <= info['width'] and y + h <= info['height']
            # every pixel of the mask has the object's colour ...
            pixels = im[mask]
            assert (pixels == pixels[0]).all()
            ref = np.array(TOY_COLORS[ann['color']])
            assert np.abs(pixels[0] - ref).max() <= 6
            # ... and its border ring shows some background
            ring = (
                cv2.dilate(
                    mask.astype(np.uint8), np.ones((3, 3), np.uint8)
                ).astype(bool)
                & ~mask
            )
            assert (np.abs(im[ring] - pixels[0]).max(axis=1) > 10).any()
        assert union.max() == 1, 'masks overlap'


def test_ring_has_hole(toy_root):
    found = 0
    for split in ('train', 'val'):
        coco = COCO(
            osp.join(toy_root, 'annotations', f'instances_{split}.json')
        )
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[4])):
            assert len(ann['segmentation']) == 1
            mask = coco.annToMask(ann)
            x, y, w, h = ann['bbox']
            assert mask[int(y + h / 2), int(x + w / 2)] == 0
            found += 1
    assert found > 0


def test_captions(toy_root):
    inst = _load(toy_root, 'instances_train.json')
    caps = _load(toy_root, 'captions_train.json')
    assert caps['images'] == inst['images']
    by_img: Dict[int, list] = {}
    for c in caps['annotations']:
        by_img.setdefault(c['image_id'], []).append(c['caption'])
    objs: Dict[int, list] = {}
    for a in inst['annotations']:
        objs.setdefault(a['image_id'], []).append(a)
    assert len({c['id'] for c in caps['annotations']}) == len(
        caps['annotations']
    )
    for img_id, texts in by_img.items():
        assert len(texts) == 5 and len(set(texts)) == 5
        names = [TOY_CLASSES[a['category_id'] - 1] for a in objs[img_id]]
        assert all(n in texts[0] for n in names)
        for text in texts:
            assert text == text.lower()
            for a in objs[img_id]:
                assert a['color'] in text and a['size'] in text
    # different images get different sets of captions
    sets = [frozenset(t) for t in by_img.values()]
    assert len(set(sets)) == len(sets)


def test_classification_labels(toy_root):
    coco = COCO(osp.join(toy_root, 'annotations', 'instances_val.json'))
    cls = _load(toy_root, 'classification_val.json')
    ml = _load(toy_root, 'multilabel_val.json')
    assert cls['metainfo']['classes'] == list(TOY_CLASSES)
    assert len(cls['data_list']) == len(ml['data_list']) == 4
    for img, c_item, m_item in zip(
        coco.loadImgs(coco.getImgIds()), cls['data_list'], ml['data_list']
    ):
        assert c_item['img_path'] == img['file_name']
        areas = np.zeros(len(TOY_CLASSES))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img['id'])):
            areas[ann['category_id'] - 1] += coco.annToMask(ann).sum()
        assert c_item['gt_label'] == int(np.argmax(areas))
        assert m_item['gt_label'] == np.flatnonzero(areas).tolist()


@pytest.mark.parametrize(
    'kwargs, name',
    [
        (dict(num_train=0), 'num_train'),
        (dict(num_val=0), 'num_val'),
        (dict(img_size=(64, 48)), 'img_size'),
        (dict(img_size=(16, 48)), 'img_size'),
        (dict(img_size=2048), 'img_size'),
        (dict(obj_size=(0.0, 0.5)), 'obj_size'),
        (dict(obj_size=(0.2, 1.5)), 'obj_size'),
        (dict(num_objects=(0, 3)), 'num_objects'),
        (dict(num_objects=(1, 9)), 'num_objects'),
        (dict(num_captions=0), 'num_captions'),
        (dict(seed=-1), 'seed'),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_toy_coco(str(tmp_path / 'bad'), **kwargs)
    assert not osp.exists(tmp_path / 'bad')


def test_existing_dir(tmp_path):
    root = str(tmp_path / 'exists')
    generate_toy_coco(root, num_train=2, num_val=1, img_size=32)
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_toy_coco(root, num_train=2, num_val=1, img_size=32)
    res = generate_toy_coco(
        root, num_train=1, num_val=1, img_size=32, overwrite=True
    )
    assert res['train']['num_images'] == 1
    assert os.listdir(osp.join(root, 'train')) == ['000001.png']


def test_verify(tmp_path, toy_root):
    summary = verify_toy_coco(toy_root)
    assert summary['train']['images'] == 12
    assert summary['val']['images'] == 4
    assert summary['train']['captions'] == 60
    root = str(tmp_path / 'v')
    generate_toy_coco(root, num_train=2, num_val=2, img_size=32)
    # a tampered label is reported with its file and field
    path = osp.join(root, 'annotations', 'classification_val.json')
    with open(path) as f:
        data = json.load(f)
    data['data_list'][0]['gt_label'] = (
        data['data_list'][0]['gt_label'] + 1
    ) % 5
    with open(path, 'w') as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match='classification_val.json.*gt_label'):
        verify_toy_coco(root)
    os.remove(osp.join(root, 'annotations', 'captions_train.json'))
    with pytest.raises(
        FileNotFoundError, match='captions_train.json.*generate_toy_coco.py'
    ):
        verify_toy_coco(root)


def test_cli(tmp_path):
    out = str(tmp_path / 'cli')
    script = osp.join(
        REPO_ROOT, 'tools', 'dataset_converters', 'generate_toy_coco.py'
    )
    cmd = [
        sys.executable,
        script,
        out,
        '--num-train',
        '3',
        '--num-val',
        '2',
        '--img-size',
        '40',
        '56',
        '--num-objects',
        '1',
        '2',
        '--seed',
        '3',
        '--num-captions',
        '3',
        '--no-progress',
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'train: 3 images' in proc.stdout
    summary = verify_toy_coco(out)
    assert summary['val']['captions'] == 6
    # a second run without --overwrite fails with a clear message
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'overwrite' in proc.stderr
