# Copyright (c) mmvfm contributors. All rights reserved.
"""CocoImageCaptionsDataset: one item per image with all its captions."""

import json
import os.path as osp

import pytest

from mmvfm.datasets import CocoImageCaptionsDataset


def test_toy_captions(toy_root):
    ds = CocoImageCaptionsDataset(
        ann_file='annotations/captions_val.json',
        data_root=toy_root,
        lazy_init=False,
    )
    with open(osp.join(toy_root, 'annotations/captions_val.json')) as f:
        ann = json.load(f)
    expected = {}
    for a in ann['annotations']:
        expected.setdefault(a['image_id'], []).append(a['caption'])
    assert len(ds) == len(ann['images'])
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    assert ids == sorted(img['id'] for img in ann['images'])
    files = {img['id']: img['file_name'] for img in ann['images']}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        assert info['gt_caption'] == expected[info['img_id']]
        assert len(info['gt_caption']) >= 2  # several captions per image
        assert info['img_path'] == osp.join(toy_root, files[info['img_id']])
        assert osp.isfile(info['img_path'])


def _write(path, images, annotations):
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=annotations), f)
    return str(path)


def test_uncaptioned_images_left_out(tmp_path):
    images = [
        dict(id=2, file_name='b.png', height=4, width=4),
        dict(id=1, file_name='a.png', height=4, width=4),
    ]
    ann_file = _write(
        tmp_path / 'c.json',
        images,
        [
            dict(id=1, image_id=2, caption='a dot'),
            dict(id=2, image_id=2, caption='one dot'),
        ],
    )
    ds = CocoImageCaptionsDataset(ann_file=ann_file, data_prefix=dict(img='x'))
    assert len(ds) == 1
    info = ds.get_data_info(0)
    assert info['img_id'] == 2 and info['gt_caption'] == ['a dot', 'one dot']
    assert info['img_path'] == osp.join('x', 'b.png')


def test_errors_name_the_file(tmp_path, toy_root):
    missing = str(tmp_path / 'none.json')
    with pytest.raises(FileNotFoundError, match='none.json'):
        CocoImageCaptionsDataset(ann_file=missing)
    with pytest.raises(ValueError, match='no "caption" string'):
        CocoImageCaptionsDataset(
            ann_file=osp.join(toy_root, 'annotations/instances_val.json')
        )
    with pytest.raises(ValueError, match='not a COCO annotation file'):
        CocoImageCaptionsDataset(
            ann_file=osp.join(toy_root, 'annotations/classification_val.json')
        )
    empty = _write(tmp_path / 'e.json', [dict(id=1, file_name='a.png')], [])
    with pytest.raises(ValueError, match='no image of .* has a caption'):
        CocoImageCaptionsDataset(ann_file=empty)
