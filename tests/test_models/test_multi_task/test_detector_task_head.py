# Copyright (c) mmvfm contributors. All rights reserved.
"""DetectorTaskHead on the ViT trunk: mmdet's Deformable DETR and
Mask2Former after a plain ViT + simple pyramid train, validate (bbox, and
segm for Mask2Former) in the multi-task val loop and are drawn by
tools/test.py --show-dir; the configs of configs/vit_trunk shrunk to 64 px,
2 iterations."""

import glob
import os.path as osp

import pytest
from conftest import REPO_ROOT, load_tool, shrink_toy_run
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner

pytestmark = pytest.mark.usefixtures('one_thread')
CONFIGS = {
    'deformable_detr': 'vit-t8_sfp_deformable-detr_1xb8-500i_toy-coco.py',
    'mask2former': 'vit-t8_sfp_mask2former_1xb8-500i_toy-coco.py',
}


def _tiny(name, toy_root, tmp_path):
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/vit_trunk', CONFIGS[name])
    )
    shrink_toy_run(
        cfg, toy_root, str(tmp_path / name), f'dth_{name}', 2, 2, val_images=4
    )
    cfg.merge_from_dict(
        {
            'model.backbone.arch.num_layers': 2,
            'model.backbone.img_size': 64,
            'val_evaluator.det.ann_file': toy_root
            + '/annotations/instances_val.json',
            'randomness.seed': 0,
        }
    )
    cfg.test_evaluator = cfg.val_evaluator
    return cfg


@pytest.mark.parametrize('name', list(CONFIGS))
def test_trains_validates_and_draws(name, toy_root, tmp_path):
    cfg = _tiny(name, toy_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.message_hub.log_scalars
    keys = ['det/coco/bbox_mAP']
    if name == 'mask2former':
        keys.append('det/coco/segm_mAP')
    for key in keys:
        value = metrics[f'val/{key}'].current()
        assert 0.0 <= value <= 1.0, (key, value)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    load_tool('test.py').main(
        [
            cfg_path,
            osp.join(cfg.work_dir, 'iter_2.pth'),
            '--work-dir',
            str(tmp_path / 'test'),
            '--show-dir',
            'vis',
            '--cfg-options',
            f'experiment_name=dth_test_{name}',
            f'visualizer.name=dth_test_{name}',
        ]
    )
    drawn = glob.glob(str(tmp_path / 'test' / '*' / 'vis' / 'det' / '*.png'))
    assert len(drawn) == 8  # every test image of the tiny toy set


def test_detector_with_its_own_backbone_is_refused():
    with pytest.raises(ValueError, match='detector.backbone must be unset'):
        MODELS.build(
            dict(
                type='DetectorTaskHead',
                detector=dict(
                    type='DeformableDETR', backbone=dict(type='ResNet')
                ),
            )
        )


def test_padding_not_a_multiple_of_patch_times_pyramid_is_refused():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/vit_trunk', CONFIGS['deformable_detr'])
    )
    cfg.model.data_preprocessor.preprocessors.det.pad_size_divisor = 16
    with pytest.raises(
        ValueError,
        match=r'det.pad_size_divisor=16 is not a '
        r"multiple of the backbone's patch \(8\) x the neck's "
        r'largest stride ratio \(4\) = 32',
    ):
        MODELS.build(cfg.model)


def test_head_that_does_not_fit_the_trunk_is_refused_at_build_time():
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/vit_trunk', CONFIGS['deformable_detr'])
    )
    cfg.model.tasks.det.detector.neck.in_channels = [64, 128, 256]
    with pytest.raises(
        ValueError,
        match=r"tasks.det: the trunk's features \[\(1, 128, 8, 8\), "
        r'\(1, 128, 4, 4\), \(1, 128, 2, 2\)\] do not fit the head',
    ):
        MODELS.build(cfg.model)
