# Copyright (c) mmvfm contributors. All rights reserved.
"""End to end through mmengine's Runner on the toy set."""

import json
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmvfm.datasets import TOY_CLASSES

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def read_scalars(work_dir: str) -> list:
    import glob

    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_ground_truth_as_predictions_gives_map_one(toy_root):
    """The COCO evaluator (bbox and segm) scores the val set's own ground
    truth, read through the instance pipeline, as mAP 1.0."""
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import DATASETS

    from mmvfm.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/_base_/datasets/toy_coco_instance.py')
    )
    ds_cfg = cfg.val_dataloader.dataset
    ds_cfg.data_root = toy_root
    dataset = DATASETS.build(ds_cfg)
    metric = CocoMetric(
        ann_file=osp.join(toy_root, 'annotations/instances_val.json'),
        metric=['bbox', 'segm'],
    )
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        gt = sample.gt_instances
        h, w = sample.ori_shape
        pred = dict(
            bboxes=gt.bboxes.tensor,
            scores=torch.ones(len(gt)),
            labels=gt.labels,
            masks=torch.from_numpy(gt.masks.to_ndarray()).bool(),
        )
        assert pred['masks'].shape[1:] == (h, w)
        metric.process(
            {},
            [
                dict(
                    img_id=sample.img_id, ori_shape=(h, w), pred_instances=pred
                )
            ],
        )
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == 1.0
    assert results['coco/segm_mAP'] == 1.0
    assert dataset.metainfo['classes'] == TOY_CLASSES


def test_loss_falls_and_logs(tiny_cfg):
    """A tiny RetinaNet fits 16 images: the loss of the last iterations is
    well below that of the first ones; train and val keys are logged."""
    cfg = tiny_cfg(max_iters=40)
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    entries = read_scalars(cfg.work_dir)
    train = [e for e in entries if 'loss' in e]
    assert len(train) == 40
    for key in (
        'loss',
        'loss_cls',
        'loss_bbox',
        'lr',
        'time',
        'data_time',
        'grad_norm',
    ):
        assert key in train[0], key
    first = np.mean([e['loss'] for e in train[:5]])
    last = np.mean([e['loss'] for e in train[-5:]])
    assert last < 0.7 * first, (first, last)
    val = [e for e in entries if 'coco/bbox_mAP' in e]
    assert len(val) == 1 and 0.0 <= val[0]['coco/bbox_mAP'] <= 1.0
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_40.pth'))
    after = runner.model.state_dict()
    assert not torch.equal(
        before['bbox_head.retina_cls.weight'],
        after['bbox_head.retina_cls.weight'],
    )


def test_resume_continues_iterations(tiny_cfg):
    cfg = tiny_cfg(max_iters=2)
    Runner.from_cfg(cfg).train()
    ckpt = osp.join(cfg.work_dir, 'iter_2.pth')
    assert osp.isfile(ckpt)

    cfg2 = tiny_cfg(max_iters=4, name='e2e_resumed')
    cfg2.resume, cfg2.load_from = True, ckpt
    runner = Runner.from_cfg(cfg2)
    runner.train()
    assert runner.iter == 4
    # the resumed run trained iterations 3 and 4 only
    loaded = torch.load(
        osp.join(cfg2.work_dir, 'iter_4.pth'), map_location='cpu'
    )
    assert loaded['meta']['iter'] == 4
    steps = [e['step'] for e in read_scalars(cfg2.work_dir) if 'loss' in e]
    assert steps == [3, 4]
