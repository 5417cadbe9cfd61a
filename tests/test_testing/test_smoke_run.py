# Copyright (c) mmvfm contributors. All rights reserved.
"""mmvfm.testing.smoke_run: what a smoke run changes in a config, and
nothing more."""

import json
import math
import os.path as osp

import pytest
from conftest import REPO_ROOT
from mmdet.datasets import CocoDataset

from mmvfm.testing import (
    bad_losses,
    iter_leaf_datasets,
    make_smoke_data,
    smoke_config,
)
from mmvfm.utils import load_config

RETINANET = osp.join(
    REPO_ROOT,
    'configs/fgd/fgd_retinanet-x101-64x4d_retinanet-r50_fpn_8xb2-24e_coco.py',
)
YOLOX = osp.join(
    REPO_ROOT, 'configs/fgd/fgd_yolox-l_yolox-m_8xb2-300e_coco.py'
)
TOY = osp.join(
    REPO_ROOT,
    'configs/toy/retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py',
)
MULTI_TASK = osp.join(
    REPO_ROOT,
    'configs/multi_task/multitask_r18-w32_det-cls_1xb8-1000i_toy-coco.py',
)


@pytest.fixture(scope='module')
def smoke_root(tmp_path_factory):
    return make_smoke_data(str(tmp_path_factory.mktemp('smoke')), 4)


def test_coco_config_reads_toy_images_with_its_own_classes(
    smoke_root, tmp_path
):
    cfg = load_config(RETINANET)
    smoke = smoke_config(cfg, smoke_root, str(tmp_path / 'run'))
    dataset = smoke.train_dataloader.dataset
    assert dataset.data_root == osp.join(smoke_root, 'smoke_CocoDataset')
    # the config's own relative paths and an epoch of one batch
    assert dataset.ann_file == 'annotations/instances_train2017.json'
    assert dataset.indices == smoke.train_dataloader.batch_size == 2
    with open(osp.join(dataset.data_root, dataset.ann_file)) as f:
        coco = json.load(f)
    classes = CocoDataset.METAINFO['classes']
    assert [c['name'] for c in coco['categories']] == list(classes)
    used = {a['category_id'] for a in coco['annotations']}
    assert used <= {1, 21, 41, 60, 80}
    assert {1, 80} <= used or len(coco['annotations']) < 4
    for img in coco['images']:
        assert osp.isfile(
            osp.join(dataset.data_root, 'train2017', img['file_name'])
        )
    # the original config is untouched
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'


def test_weights_schedule_and_validation(smoke_root, tmp_path):
    smoke = smoke_config(load_config(RETINANET), smoke_root, str(tmp_path))
    model = smoke.model
    assert model.teacher_ckpt is None and model.allow_untrained_teacher
    assert 'Pretrained' not in str(model.student)
    assert model.student.test_cfg.score_thr == 0.0
    assert smoke.train_cfg.max_epochs == 1
    assert smoke.val_cfg is None and smoke.val_dataloader is None
    assert smoke.val_evaluator is None
    assert smoke.train_dataloader.num_workers == 0
    assert smoke.default_hooks.checkpoint.interval == -1
    assert smoke.load_from is None


def test_toy_config_keeps_its_files(smoke_root, tmp_path):
    smoke = smoke_config(
        load_config(TOY), smoke_root, str(tmp_path), checkpoint=True
    )
    assert smoke.train_cfg.max_iters == 1
    dataset = smoke.test_dataloader.dataset
    assert dataset.data_root == smoke_root
    assert dataset.ann_file == 'annotations/instances_val.json'
    assert smoke.test_evaluator.ann_file == osp.join(
        smoke_root, 'annotations/instances_val.json'
    )
    assert smoke.default_hooks.checkpoint.interval == 1


def test_multi_task_loop_trains_each_task_once(smoke_root, tmp_path):
    from mmvfm.engine.runner import TaskSampler

    cfg = load_config(MULTI_TASK)
    smoke = smoke_config(cfg, smoke_root, str(tmp_path), seed=3)
    n = smoke.train_cfg.max_iters
    # the draws are seeded so that each of the two tasks trains at once
    assert n == 2
    sampler = TaskSampler(
        dict(cfg.train_cfg.task_ratios), 'unmixed', smoke.train_cfg.seed
    )
    tasks = [sampler.task_at(i) for i in range(n)]
    assert set(tasks) == {'det', 'cls'}
    for loader in smoke.train_dataloader.values():
        assert loader.dataset.data_root == smoke_root


def test_multi_task_draw_seed_of_the_config_is_kept(smoke_root, tmp_path):
    from mmvfm.engine.runner import TaskSampler

    cfg = load_config(MULTI_TASK)
    ratios = dict(cfg.train_cfg.task_ratios)
    # a seed whose first two draws are one task: it takes more iterations
    seed = next(
        s
        for s in range(100)
        if len({TaskSampler(ratios, 'unmixed', s).task_at(i) for i in (0, 1)})
        == 1
    )
    cfg.train_cfg.seed = seed
    smoke = smoke_config(cfg, smoke_root, str(tmp_path))
    assert smoke.train_cfg.seed == seed
    n = smoke.train_cfg.max_iters
    sampler = TaskSampler(ratios, 'unmixed', seed)
    tasks = [sampler.task_at(i) for i in range(n)]
    assert n > 2 and set(tasks) == {'det', 'cls'}
    assert len(set(tasks[:-1])) == 1  # not one iteration more


def test_captions_dataset_and_shared_evaluators(smoke_root, tmp_path):
    """A COCO captions dataset (no classes) gets the toy captions at the
    config's paths; evaluators that read a dataset's file -- one dict
    shared by val and test included -- point at that dataset's file, even
    when two datasets share a data root."""
    cfg = load_config(MULTI_TASK)
    cap = dict(
        type='CocoImageCaptionsDataset',
        data_root='data/coco/',
        ann_file='annotations/captions_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=[],
    )
    inst = dict(cfg.val_dataloader.det.dataset)
    inst.update(
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
    )
    cfg.val_dataloader = dict(
        det=dict(cfg.val_dataloader.det, dataset=inst),
        cls=dict(cfg.val_dataloader.cls, dataset=cap),
    )
    cfg.test_dataloader = cfg.val_dataloader
    evaluator = dict(
        det=dict(
            type='CocoMetric',
            ann_file='data/coco/annotations/instances_val2017.json',
        ),
        cls=dict(
            type='CaptionMetric',
            ann_file='data/coco/annotations/captions_val2017.json',
        ),
    )
    cfg.val_evaluator = evaluator
    cfg.test_evaluator = evaluator  # one dict, as `test_evaluator = val_...`
    smoke = smoke_config(cfg, smoke_root, str(tmp_path))
    dataset = smoke.test_dataloader.cls.dataset
    root = osp.join(smoke_root, 'smoke_CocoImageCaptionsDataset')
    assert dataset.data_root == root
    assert dataset.ann_file == 'annotations/captions_val2017.json'
    with open(osp.join(root, dataset.ann_file)) as f:
        coco = json.load(f)
    with open(osp.join(smoke_root, 'annotations/captions_val.json')) as f:
        toy = json.load(f)
    assert coco['annotations'] == toy['annotations']
    for img in coco['images']:
        assert osp.isfile(osp.join(root, 'val2017', img['file_name']))
    assert smoke.test_evaluator.cls.ann_file == osp.join(
        root, 'annotations/captions_val2017.json'
    )
    assert smoke.test_evaluator.det.ann_file == osp.join(
        smoke_root, 'smoke_CocoDataset', 'annotations/instances_val2017.json'
    )


def test_scale_shrinks_every_spatial_size(smoke_root, tmp_path):
    cfg = load_config(YOLOX)
    smoke = smoke_config(cfg, smoke_root, str(tmp_path), scale=0.5)
    wrapper = smoke.train_dataloader.dataset
    steps = {t['type']: t for t in wrapper.pipeline}
    assert steps['Mosaic']['img_scale'] == (320, 320)
    assert steps['RandomAffine']['border'] == (-160, -160)
    assert steps['RandomAffine']['scaling_ratio_range'] == (0.1, 2)
    assert steps['Resize']['scale'] == (320, 320)
    assert steps['Resize']['keep_ratio'] is True
    augment = smoke.model.student.data_preprocessor.batch_augments[0]
    assert augment['random_size_range'] == (240, 400)
    assert augment['size_divisor'] == 32  # a divisor, not a size
    # the wrapped dataset is the one that reads the toy file
    (inner,) = list(iter_leaf_datasets(wrapper))
    assert inner.data_root.endswith('smoke_CocoDataset')


def test_dataset_without_classes_is_refused(smoke_root, tmp_path):
    cfg = load_config(TOY)
    cfg.train_dataloader.dataset.type = 'BaseDetDataset'
    cfg.train_dataloader.dataset.ann_file = 'annotations/other.json'
    with pytest.raises(ValueError, match='train_dataloader.*declares no'):
        smoke_config(cfg, smoke_root, str(tmp_path))


def test_bad_losses():
    losses = dict(a=1.0, b=math.inf, c=math.nan, d=-2e3, e=999.0, iters=1)
    assert [k for k, _ in bad_losses(losses, 1e3)] == ['b', 'c', 'd']
