# Copyright (c) mmvfm contributors. All rights reserved.
import os.path as osp

import pytest

from mmvfm.utils import load_config, load_run_config, resolve_config_path


def test_package_config_path_resolves():
    path = resolve_config_path('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert osp.isfile(path)
    cfg = load_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert cfg.model.type == 'RetinaNet'


@pytest.mark.parametrize(
    'path,expected',
    [
        ('configs/none.py', 'config file "configs/none.py" does not exist'),
        ('mmdet::none/none.py', 'config "mmdet::none/none.py" does not exist'),
        ('nopkg_xyz::a.py', 'package "nopkg_xyz" is not installed'),
    ],
)
def test_missing_config_is_named(path, expected):
    with pytest.raises(FileNotFoundError) as err:
        resolve_config_path(path)
    assert expected in str(err.value)


def test_load_run_config_defaults_work_dir():
    cfg = load_run_config(
        'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        cfg_options={'model.neck.out_channels': 64},
    )
    assert cfg.work_dir == osp.join('./work_dirs', 'retinanet_r50_fpn_1x_coco')
    assert cfg.model.neck.out_channels == 64
    with pytest.raises(SystemExit, match='does not exist'):
        load_run_config('nothing_here.py')
