# Copyright (c) mmvfm contributors. All rights reserved.
import pytest
from mmengine.config import Config

from mmvfm.utils import check_data_paths


def _cfg(
    root,
    ann='annotations/instances_train.json',
    wrap=False,
    ds_type='ToyCocoDataset',
):
    dataset = dict(type=ds_type, data_root=root, ann_file=ann)
    if wrap:
        dataset = dict(type='RepeatDataset', times=2, dataset=dataset)
    return Config(
        dict(train_dataloader=dict(dataset=dataset), val_dataloader=None)
    )


def test_existing_paths_pass(toy_root):
    checked = check_data_paths(_cfg(toy_root))
    assert checked and checked[0].endswith('instances_train.json')


def test_missing_root_names_field_and_generator(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        check_data_paths(_cfg(str(tmp_path / 'toy_coco')))
    msg = str(err.value)
    assert 'train_dataloader.dataset.data_root' in msg
    assert 'generate_toy_coco.py' in msg


def test_missing_ann_file_in_wrapped_dataset(toy_root):
    with pytest.raises(FileNotFoundError) as err:
        check_data_paths(
            _cfg(
                toy_root,
                ann='annotations/nope.json',
                wrap=True,
                ds_type='CocoDataset',
            )
        )
    msg = str(err.value)
    assert 'train_dataloader.dataset.dataset.ann_file' in msg
    assert 'nope.json' in msg


def test_only_requested_loaders_are_checked(tmp_path):
    cfg = _cfg(str(tmp_path / 'missing'))
    assert check_data_paths(cfg, ['test_dataloader']) == []


def test_each_task_of_a_multi_task_config_is_checked(toy_root):
    good = dict(
        dataset=dict(
            type='CocoDataset',
            data_root=toy_root,
            ann_file='annotations/instances_train.json',
        )
    )
    bad = dict(
        dataset=dict(
            type='CocoDataset',
            data_root=toy_root,
            ann_file='annotations/x.json',
        )
    )
    cfg = Config(dict(train_dataloader=dict(det=good, seg=good)))
    assert len(check_data_paths(cfg)) == 2
    cfg = Config(dict(train_dataloader=dict(det=good, seg=bad)))
    with pytest.raises(
        FileNotFoundError, match=r'train_dataloader\.seg\.dataset\.ann_file'
    ):
        check_data_paths(cfg)
