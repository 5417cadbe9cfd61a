# Copyright (c) mmvfm contributors. All rights reserved.
import os.path as osp

import pytest

from mmvfm.datasets import TOY_CLASSES, ToyCocoDataset


def test_toy_dataset_loads_with_toy_classes(toy_root):
    ds = ToyCocoDataset(
        data_root=toy_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=[],
    )
    assert len(ds) == 8
    assert ds.metainfo['classes'] == TOY_CLASSES
    info = ds[0]
    assert osp.isfile(info['img_path'])
    assert all(0 <= inst['bbox_label'] < 5 for inst in info['instances'])


def test_missing_annotation_says_how_to_generate(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ToyCocoDataset(
            data_root=str(tmp_path),
            ann_file='annotations/instances_train.json',
            pipeline=[],
        )
    assert 'instances_train.json' in str(err.value)
    assert 'generate_toy_coco.py' in str(err.value)


def test_registered_in_mmdet_registry():
    from mmdet.registry import DATASETS

    assert DATASETS.get('ToyCocoDataset') is ToyCocoDataset
