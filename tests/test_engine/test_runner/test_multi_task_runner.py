# Copyright (c) mmvfm contributors. All rights reserved.
"""The multi-task loops end to end through mmengine's Runner (and DDP)."""

import glob
import os.path as osp
import pickle

import pytest
import torch
from conftest import load_tool
from mmdet.registry import MODELS
from mmengine.hooks import Hook
from mmengine.model import BaseModule
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop, Runner

from mmvfm.engine.runner import TaskSampler

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)


@HOOKS.register_module(force=True)
class _BatchRecorderHook(Hook):
    """Records, per train iteration, the task and the image paths of the
    batch (class attribute: the Runner builds its own instance)."""

    records = {}

    def __init__(self, key: str) -> None:
        self.key = key
        self.records[key] = []

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        paths = [s.img_path for s in data_batch['data_samples']]
        self.records[self.key].append((batch_idx, data_batch['task'], paths))


def _scalars(work_dir):
    import json

    (path,) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_two_task_model_trains_validates_and_tests(tiny_mt_cfg, tmp_path):
    """Both tasks train (task-prefixed losses logged), one val pass reports
    both tasks' metrics with prefixes, save_best keeps the best checkpoint
    of the prefixed metric, and tools/test.py evaluates every task.
    Validation follows mmengine's interval rules (dynamic intervals too)."""
    cfg = tiny_mt_cfg(max_iters=8)
    cfg.randomness = dict(seed=0)
    cfg.train_cfg.val_interval = 4
    # from iteration 7 on (1-based: after 6 iterations) every 2nd iteration
    cfg.train_cfg.dynamic_intervals = [(7, 2)]
    cfg.default_hooks.checkpoint.interval = 4
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.train_loop, IterBasedTrainLoop)
    runner.train()

    entries = _scalars(cfg.work_dir)
    train = [e for e in entries if 'loss' in e]
    assert len(train) == 8
    logged = set().union(*train)
    assert {'det.loss_cls', 'det.loss_bbox', 'cls.loss'} <= logged
    val = [e for e in entries if 'det/coco/bbox_mAP' in e]
    assert [e['step'] for e in val] == [4, 6, 8]
    for e in val:
        assert 0.0 <= e['det/coco/bbox_mAP'] <= 1.0
        assert 0.0 <= e['cls/accuracy/top1'] <= 100.0
    best = max(val, key=lambda e: e['det/coco/bbox_mAP'])
    best_ckpts = glob.glob(osp.join(cfg.work_dir, 'best_det_coco_bbox_mAP*'))
    assert len(best_ckpts) == 1
    # ties keep the first best one
    first_best = next(
        e['step']
        for e in val
        if e['det/coco/bbox_mAP'] == best['det/coco/bbox_mAP']
    )
    assert best_ckpts[0].endswith(f'_iter_{first_best}.pth')

    cfg_path = str(tmp_path / 'mt.py')
    cfg.dump(cfg_path)
    out = str(tmp_path / 'results.pkl')
    metrics = load_tool('test.py').main(
        [
            cfg_path,
            osp.join(cfg.work_dir, 'iter_8.pth'),
            '--work-dir',
            str(tmp_path / 'test'),
            '--out',
            out,
            '--cfg-options',
            'visualizer.name=mt_test',
        ]
    )
    assert set(metrics) >= {'det/coco/bbox_mAP', 'cls/accuracy/top1'}
    # the same weights give the same metrics as the last val pass
    assert metrics['det/coco/bbox_mAP'] == pytest.approx(
        val[-1]['det/coco/bbox_mAP'], abs=1e-3
    )
    assert metrics['cls/accuracy/top1'] == pytest.approx(
        val[-1]['cls/accuracy/top1'], abs=1e-3
    )
    for task, n in (('det', 8), ('cls', 8)):
        with open(str(tmp_path / f'results.{task}.pkl'), 'rb') as f:
            assert len(pickle.load(f)) == n


def test_resume_continues_tasks_and_each_tasks_data(tiny_mt_cfg):
    """A run stopped at iteration 4 and resumed trains iterations 4..7 on
    the same tasks and the same images as an uninterrupted run."""
    key_full, key_part, key_resumed = 'full', 'part', 'resumed'

    def make(name, max_iters, key):
        cfg = tiny_mt_cfg(max_iters=max_iters, name=name)
        cfg.randomness = dict(seed=3)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.train_cfg.pop('val_interval')
        cfg.default_hooks.checkpoint.save_best = None
        cfg.default_hooks.checkpoint.interval = 4
        cfg.custom_hooks = [dict(type='_BatchRecorderHook', key=key)]
        return cfg

    Runner.from_cfg(make('mt_full', 8, key_full)).train()
    part = make('mt_part', 4, key_part)
    Runner.from_cfg(part).train()
    resumed = make('mt_resumed', 8, key_resumed)
    resumed.resume = True
    resumed.load_from = osp.join(part.work_dir, 'iter_4.pth')
    Runner.from_cfg(resumed).train()

    records = _BatchRecorderHook.records
    full = records[key_full]
    assert [r[0] for r in records[key_resumed]] == [4, 5, 6, 7]
    assert records[key_part] == full[:4]
    assert records[key_resumed] == full[4:]
    tasks = [r[1] for r in full]
    assert set(tasks) == {'det', 'cls'}  # both tasks in the window
    # the sequence is the task sampler's
    sampler = TaskSampler(dict(det=0.5, cls=0.5), 'unmixed', seed=3)
    assert tasks == [sampler.task_at(i) for i in range(8)]
    # each task's data continues: no image repeats within a task's pass
    for task in ('det', 'cls'):
        paths = [p for r in full if r[1] == task for p in r[2]]
        n_data = 16  # toy train images
        first_pass = paths[:n_data]
        assert len(set(first_pass)) == len(first_pass)


def test_mixed_strategy_refuses_a_collective_head(tiny_mt_cfg):
    cfg = tiny_mt_cfg(strategy='mixed')
    cfg.model.tasks.cls.uses_collective = True
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match="strategy='mixed' with tasks"):
        runner.train()
    # unmixed runs the same model
    cfg = tiny_mt_cfg(strategy='unmixed', max_iters=1, name='unmixed_ok')
    cfg.model.tasks.cls.uses_collective = True
    Runner.from_cfg(cfg).train()


def test_loop_config_errors(tiny_mt_cfg):
    cfg = tiny_mt_cfg()
    cfg.train_cfg.task_ratios = dict(det=0.5, seg=0.5)
    with pytest.raises(ValueError, match='must name the same tasks'):
        Runner.from_cfg(cfg).train()
    cfg = tiny_mt_cfg(name='bad_eval')
    cfg.val_evaluator = dict(det=cfg.val_evaluator.det)
    with pytest.raises(ValueError, match='one evaluator per task'):
        Runner.from_cfg(cfg).train()


@pytest.mark.parametrize('strategy', ['unmixed', 'mixed'])
def test_ddp_task_per_rank(tiny_mt_cfg, dist_train_probed, strategy):
    """2-process gloo DDP: the heads that received gradient on each rank in
    each iteration. ``unmixed``: the same single head on both ranks every
    iteration; ``mixed``: the ranks' tasks differ in some iterations. The
    sequences are ``TaskSampler.task_at(iteration, rank)``; DDP keeps the
    replicas identical either way."""
    n = 10
    cfg = tiny_mt_cfg(max_iters=n, strategy=strategy, name=strategy)
    cfg.randomness = dict(seed=5)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.pop('val_interval')
    cfg.default_hooks.checkpoint.save_best = None
    records = dist_train_probed(cfg, task_probe=True)
    probes = [r['task_probe'] for r in records]
    sampler = TaskSampler(dict(det=0.5, cls=0.5), strategy, seed=5)
    for rank, probe in enumerate(probes):
        assert probe['world_size'] == 2
        assert probe['tasks'] == [sampler.task_at(i, rank) for i in range(n)]
        # only the drawn task's head gets a gradient from this rank
        assert probe['heads'] == [[t] for t in probe['tasks']]
    same = [a == b for a, b in zip(probes[0]['tasks'], probes[1]['tasks'])]
    if strategy == 'unmixed':
        assert all(same)
    else:
        assert not all(same)
    assert records[0]['digests'] == records[1]['digests']
    assert records[0]['wrapper'] == 'MMDistributedDataParallel'


def test_instance_segmentation_task_reports_segm_map(tiny_mt_cfg, toy_root):
    """A third task, instance segmentation with mmdet's SOLOv2 head as a
    ``DetTaskHead``, trains beside the others and the one val loop reports
    its COCO mask mAP as ``seg/coco/segm_mAP``."""
    import copy

    from mmengine.config import Config

    cfg = tiny_mt_cfg(max_iters=3)
    inst = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/_base_/datasets/toy_coco_instance.py')
    )
    cfg.model.data_preprocessor.preprocessors.seg = dict(
        cfg.model.data_preprocessor.preprocessors.det, pad_mask=True
    )
    cfg.model.tasks.seg = dict(
        type='DetTaskHead',
        neck=dict(
            type='FPN',
            in_channels=[16, 32, 64, 128],
            out_channels=32,
            start_level=0,
            num_outs=5,
        ),
        head=dict(
            type='SOLOV2Head',
            num_classes=5,
            in_channels=32,
            feat_channels=32,
            stacked_convs=1,
            strides=[8, 8, 16, 32, 32],
            scale_ranges=((1, 24), (12, 48), (24, 96), (48, 192), (96, 2048)),
            num_grids=[12, 10, 8, 6, 4],
            mask_feature_head=dict(
                feat_channels=16,
                start_level=0,
                end_level=3,
                out_channels=32,
                mask_stride=4,
                norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
            ),
            loss_mask=dict(type='DiceLoss', use_sigmoid=True, loss_weight=3.0),
            loss_cls=dict(
                type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25
            ),
            test_cfg=dict(
                nms_pre=100,
                # an untrained head: keep every mask (no empty result)
                score_thr=0.0,
                mask_thr=0.0,
                filter_thr=0.0,
                kernel='gaussian',
                sigma=2.0,
                max_per_img=20,
            ),
        ),
    )
    for split, pipeline in (
        ('train', inst.train_pipeline),
        ('val', inst.test_pipeline),
        ('test', inst.test_pipeline),
    ):
        loader = copy.deepcopy(cfg[f'{split}_dataloader'].det)
        loader.dataset.pipeline = copy.deepcopy(pipeline)
        for t in loader.dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (64, 64)
        cfg[f'{split}_dataloader'].seg = loader
    ann_val = osp.join(toy_root, 'annotations/instances_val.json')
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].seg = dict(
            type='CocoMetric', ann_file=ann_val, metric='segm'
        )
    cfg.train_cfg.task_ratios = dict(det=1, cls=1, seg=1)
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    entries = _scalars(cfg.work_dir)
    # seed 0 draws cls, cls, seg: the SOLOv2 head trained once
    assert any('seg.loss_mask' in e for e in entries)
    (val,) = [e for e in entries if 'seg/coco/segm_mAP' in e]
    assert {'det/coco/bbox_mAP', 'cls/accuracy/top1'} <= set(val)
    assert 0.0 <= val['seg/coco/segm_mAP'] <= 1.0


def test_ddp_without_find_unused_parameters_is_refused(tmp_path):
    """Under DDP each iteration leaves the other tasks' heads unused: the
    loop refuses a DDP wrapper without ``find_unused_parameters`` (a real
    wrapper in a 1-process gloo group; the check itself, not a run)."""
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from mmvfm.engine import MultiTaskIterBasedTrainLoop
    from mmvfm.models.multi_task import BaseMultiTaskModel

    class TwoHeads(BaseMultiTaskModel):
        tasks = ('det', 'cls')

        def __init__(self):
            super().__init__()
            self.det = torch.nn.Linear(2, 2)
            self.cls = torch.nn.Linear(2, 2)

    loop = object.__new__(MultiTaskIterBasedTrainLoop)
    loop.task_sampler = TaskSampler(dict(det=0.5, cls=0.5), 'unmixed', 0)
    loop.dataloaders = dict(det=None, cls=None)
    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1
    )
    try:
        for find_unused in (False, True):
            runner = SimpleNamespace(
                model=MMDistributedDataParallel(
                    TwoHeads(), find_unused_parameters=find_unused
                )
            )
            if find_unused:
                loop._check_tasks(runner)
            else:
                with pytest.raises(ValueError, match='find_unused_param'):
                    loop._check_tasks(runner)
    finally:
        dist.destroy_process_group()


@MODELS.register_module(force=True)
class _ReadBackCaptionHead(BaseModule):
    """Test-only task head, not a model: predicts each image's first
    reference caption and embeds the image and its captions by the image
    id, so the metrics' values are known and the test checks the wiring
    dataset -> pipeline -> loop -> evaluator -> prefixed metrics."""

    uses_collective = False

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def loss(self, feats, data_samples) -> dict:
        return dict(loss=self.scale * feats[-1].mean())

    def predict(self, feats, data_samples) -> list:
        for sample in data_samples:
            sample.pred_caption = sample.gt_caption[0]
            gen = torch.Generator().manual_seed(int(sample.img_id))
            embed = torch.randn(8, generator=gen, dtype=torch.float64)
            sample.img_embed = embed
            sample.text_embeds = embed.expand(len(sample.gt_caption), 8)
        return data_samples


def test_caption_and_retrieval_task_in_the_val_loop(tiny_mt_cfg, toy_root):
    """A third task reads the toy captions (CocoImageCaptionsDataset, all
    captions of an image in one sample); the one val loop reports
    cap/caption/BLEU-1..4, CIDEr-D and cap/retrieval/{i2t,t2i}_R@k beside
    the other tasks' metrics, with the values the predictions imply."""
    from mmdet.registry import METRICS

    cfg = tiny_mt_cfg(name='mt_cap')
    # runner.val() without training: mmengine's CheckpointHook can only
    # save_best after before_train
    cfg.default_hooks.checkpoint.save_best = None
    preprocessors = cfg.model.data_preprocessor.preprocessors
    preprocessors.cap = dict(type='mmpretrain.ClsDataPreprocessor')
    cfg.model.tasks.cap = dict(type='_ReadBackCaptionHead')
    cfg.val_dataloader.cap = dict(
        batch_size=4,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='CocoImageCaptionsDataset',
            data_root=toy_root,
            ann_file='annotations/captions_val.json',
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(64, 64), keep_ratio=False),
                dict(
                    type='mmpretrain.PackInputs',
                    algorithm_keys=['gt_caption'],
                    meta_keys=['img_id'],
                ),
            ],
        ),
    )
    cfg.val_evaluator.cap = [
        dict(type='CaptionMetric'),
        dict(type='RetrievalMetric', topk=(1, 5)),
    ]
    runner = Runner.from_cfg(cfg)
    metrics = runner.val()

    assert {'det/coco/bbox_mAP', 'cls/accuracy/top1'} <= set(metrics)
    cap = {k: v for k, v in metrics.items() if k.startswith('cap/')}
    assert sorted(cap) == sorted(
        [f'cap/caption/BLEU-{n}' for n in (1, 2, 3, 4)]
        + ['cap/caption/CIDEr-D', 'cap/retrieval/R_mean']
        + [f'cap/retrieval/{d}_R@{k}' for d in ('i2t', 't2i') for k in (1, 5)]
    )
    # each prediction is one of its references: BLEU is 1
    assert cap['cap/caption/BLEU-4'] == pytest.approx(1.0, abs=1e-6)
    # CIDEr-D as the metric gives it on the same captions outside the loop
    dataset = runner.val_loop.dataloaders['cap'].dataset
    direct = METRICS.build(dict(type='CaptionMetric'))
    direct.process(
        None,
        [
            dict(
                pred_caption=info['gt_caption'][0],
                gt_caption=info['gt_caption'],
            )
            for info in (dataset.get_data_info(i) for i in range(len(dataset)))
        ],
    )
    expected = direct.evaluate(len(dataset))['caption/CIDEr-D']
    assert cap['cap/caption/CIDEr-D'] == pytest.approx(expected, rel=1e-9)
    # every text embedded exactly as its own image: recall 100 both ways
    assert cap['cap/retrieval/i2t_R@1'] == pytest.approx(100.0)
    assert cap['cap/retrieval/t2i_R@1'] == pytest.approx(100.0)


def test_loops_let_the_model_check_each_tasks_dataset(
    tiny_mt_cfg, monkeypatch
):
    """A model with ``check_task_data(task, metainfo)`` sees every task's
    dataset of the train and val loops at build time; its error stops the
    run before the first iteration."""
    from mmvfm.models.multi_task import MultiTaskModel

    seen = []

    def record(self, task, metainfo):
        seen.append((task, tuple(metainfo.get('classes') or ())))

    monkeypatch.setattr(
        MultiTaskModel, 'check_task_data', record, raising=False
    )
    cfg = tiny_mt_cfg(max_iters=1, name='check_ok')
    Runner.from_cfg(cfg).train()
    tasks = sorted(cfg.train_dataloader)
    assert sorted({t for t, _ in seen}) == tasks
    assert len(seen) >= 2 * len(tasks)  # train and val loops
    assert any(classes for _, classes in seen)

    def refuse(self, task, metainfo):
        raise ValueError(f'task {task!r}: refused')

    monkeypatch.setattr(MultiTaskModel, 'check_task_data', refuse)
    runner = Runner.from_cfg(tiny_mt_cfg(max_iters=1, name='check_bad'))
    with pytest.raises(ValueError, match='refused'):
        runner.train()


def test_train_loop_needs_a_multi_task_model():
    """The train loop reads the task interface of BaseMultiTaskModel (no
    attribute probing): another model is a TypeError naming its class,
    even one with a ``tasks`` attribute."""
    from types import SimpleNamespace

    from mmvfm.engine import MultiTaskIterBasedTrainLoop

    class Plain(torch.nn.Module):
        tasks = ('det', 'cls')

    loop = object.__new__(MultiTaskIterBasedTrainLoop)
    loop.task_sampler = TaskSampler(dict(det=0.5, cls=0.5), 'unmixed', 0)
    loop.dataloaders = dict(det=None, cls=None)
    with pytest.raises(TypeError, match=r'BaseMultiTaskModel.*got .*\.Plain'):
        loop._check_tasks(SimpleNamespace(model=Plain()))


def test_the_loops_reuse_mmengines_loop_state(tiny_mt_cfg):
    """mmengine's BaseLoop keeps the task dataloaders as built (they are
    not a dict config), IterBasedTrainLoop's bookkeeping is the loop's."""
    from mmvfm.engine.runner import TaskDataloaders

    cfg = tiny_mt_cfg(max_iters=2, name='reuse')
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.pop('val_interval')
    cfg.default_hooks.checkpoint.save_best = None
    runner = Runner.from_cfg(cfg)
    loop = runner.build_train_loop(runner._train_loop)
    assert isinstance(loop.dataloader, TaskDataloaders)
    assert loop.dataloader is loop.dataloaders
    assert sorted(loop.dataloaders) == ['cls', 'det']
    assert len(loop.dataloaders.keys()) == 2
    assert len(loop.dataloader) == sum(
        len(d) for d in loop.dataloaders.values()
    )
    assert (loop.max_iters, loop.iter, loop.epoch) == (2, 0, 0)
    assert loop.val_interval == 1000 and loop.val_begin == 1
