# Copyright (c) mmvfm contributors. All rights reserved.
"""Multi-task training and evaluation loops on mmengine's Runner.

Each task keeps its own dataloader (dataset, pipeline, batch size,
collate); the train loop draws the task of every iteration with a
:class:`~mmvfm.engine.runner.TaskSampler` and hands the batch, tagged with
``data_batch['task']``, to the model's ``train_step``. The val/test loops
run every task's dataloader and evaluator in one pass and report all
metrics prefixed by the task (``'det/coco/bbox_mAP'``), so ``save_best``
and the logger work on them as on single-task metrics.

Config::

    train_dataloader = dict(det=dict(...), cls=dict(...))
    train_cfg = dict(type='MultiTaskIterBasedTrainLoop', max_iters=1000,
                     task_ratios=dict(det=0.5, cls=0.5), strategy='unmixed')
    val_dataloader = dict(det=dict(...), cls=dict(...))
    val_evaluator = dict(det=dict(type='CocoMetric', ...),
                         cls=dict(type='mmpretrain.Accuracy'))
    val_cfg = dict(type='MultiTaskValLoop')
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import LOOPS
from mmengine.dist import get_dist_info
from mmengine.evaluator import Evaluator
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.amp import autocast
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.utils import calc_dynamic_intervals
from torch.utils.data import DataLoader

from mmvfm.datasets.samplers import ResumableInfiniteSampler

from .task_sampler import TaskSampler


class TaskDataloaders(dict):
    """``task -> DataLoader``, with what hooks expect of one dataloader:
    ``len()`` (all tasks' batches) and ``.dataset`` (the first task's)."""

    @property
    def dataset(self):
        return next(iter(self.values())).dataset

    def __len__(self) -> int:  # number of batches of all tasks
        return sum(len(dl) for dl in self.values())


def _build_task_dataloaders(
    runner, dataloaders: Dict[str, Union[dict, DataLoader]], field: str
) -> TaskDataloaders:
    if (
        not isinstance(dataloaders, dict)
        or not dataloaders
        or any(
            not isinstance(v, (dict, DataLoader)) for v in dataloaders.values()
        )
        or 'dataset' in dataloaders
    ):
        raise TypeError(
            f'{field} of a multi-task loop must be a dict of task name -> '
            'dataloader config, e.g. dict(det=dict(dataset=...), '
            'cls=dict(dataset=...))'
        )
    out = TaskDataloaders()
    for task, cfg in dataloaders.items():
        out[task] = (
            runner.build_dataloader(cfg, seed=runner.seed)
            if isinstance(cfg, dict)
            else cfg
        )
    return out


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _check_task_data(runner, dataloaders) -> None:
    """Let the model check each task's dataset (e.g. its class list
    against the task's candidates): ``model.check_task_data(task,
    metainfo)``, when the model defines it."""
    check = getattr(_unwrap(runner.model), 'check_task_data', None)
    if check is None:
        return
    for task, loader in dataloaders.items():
        metainfo = getattr(getattr(loader, 'dataset', None), 'metainfo', None)
        if metainfo is not None:
            check(task, metainfo)


def _model_tasks(runner) -> Optional[List[str]]:
    model = _unwrap(runner.model)
    tasks = getattr(model, 'tasks', None)
    return list(tasks) if tasks is not None else None


@LOOPS.register_module()
class MultiTaskIterBasedTrainLoop(IterBasedTrainLoop):
    """Iteration-based training that draws one task per iteration.

    Args:
        runner (Runner): the runner.
        dataloader (dict): task name -> dataloader config. Each task's
            sampler should be ``ResumableInfiniteSampler`` (set when the
            config names none), so a resumed run continues every task's
            data where it stopped.
        max_iters (int): total iterations.
        task_ratios (dict): task name -> sampling ratio.
        strategy (str): ``'unmixed'`` (all ranks train the same task in an
            iteration) or ``'mixed'`` (each rank draws its own).
        seed (int, optional): seed of the task draws; default: the runner's
            seed.
        val_begin (int): first iteration that may validate.
        val_interval (int): validate every this many iterations.
        dynamic_intervals (list[tuple[int, int]], optional): as mmengine's
            ``IterBasedTrainLoop``.

    Raises at build time: tasks of the ratios, the dataloaders and the
    model that differ; a dataset the model's ``check_task_data(task,
    metainfo)`` refuses (when it has one); ``mixed`` with a task whose head
    runs a cross-rank collective (the ranks would wait on each other in
    different heads and deadlock); DDP without ``find_unused_parameters``
    (each iteration leaves the other tasks' heads unused).
    """

    def __init__(
        self,
        runner,
        dataloader: Dict[str, dict],
        max_iters: int,
        task_ratios: Dict[str, float],
        strategy: str = 'unmixed',
        seed: Optional[int] = None,
        val_begin: int = 1,
        val_interval: int = 1000,
        dynamic_intervals: Optional[List[Tuple[int, int]]] = None,
    ) -> None:
        # IterBasedTrainLoop.__init__ builds one dataloader: set its state
        # here and inherit the rest (iteration bookkeeping, run_iter, the
        # dynamic validation interval).
        self._runner = runner
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(
                f'max_iters must be a positive int, got {max_iters!r}'
            )
        dataloader = (
            {
                task: self._with_resumable_sampler(cfg)
                for task, cfg in dict(dataloader).items()
            }
            if isinstance(dataloader, dict)
            else dataloader
        )
        self.dataloaders = _build_task_dataloaders(
            runner, dataloader, 'train_dataloader'
        )
        self.dataloader = self.dataloaders  # what runner/hooks read
        self.task_sampler = TaskSampler(
            task_ratios, strategy, runner.seed if seed is None else seed
        )
        self._check_tasks(runner)
        _check_task_data(runner, self.dataloaders)

        self._max_iters = max_iters
        self._max_epochs = 1
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False
        self.dynamic_milestones, self.dynamic_intervals = (
            calc_dynamic_intervals(val_interval, dynamic_intervals)
        )
        self.rank = get_dist_info()[0]
        self._iterators: Dict[str, object] = {}

    # ------------------------------------------------------------------
    @staticmethod
    def _with_resumable_sampler(cfg):
        if isinstance(cfg, dict) and cfg.get('sampler') is None:
            cfg = dict(
                cfg,
                sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
            )
        return cfg

    def _check_tasks(self, runner) -> None:
        ratio_tasks = set(self.task_sampler.tasks)
        loader_tasks = set(self.dataloaders)
        if ratio_tasks != loader_tasks:
            raise ValueError(
                f'task_ratios {sorted(ratio_tasks)} and train_dataloader '
                f'{sorted(loader_tasks)} must name the same tasks'
            )
        model_tasks = _model_tasks(runner)
        if model_tasks is not None and not ratio_tasks <= set(model_tasks):
            raise ValueError(
                f'the model has no head for {sorted(ratio_tasks - set(model_tasks))} '  # noqa: E501
                f'(its tasks: {model_tasks})'
            )
        if self.task_sampler.strategy == 'mixed':
            model = _unwrap(runner.model)
            collective = [
                t
                for t in ratio_tasks
                if getattr(model, 'task_uses_collective', lambda t: False)(t)
            ]
            if collective:
                raise ValueError(
                    f"strategy='mixed' with tasks {sorted(collective)} whose "
                    'heads run a cross-rank collective (e.g. gathering '
                    'retrieval features, or a detection loss normaliser '
                    'averaged over the ranks): ranks training different '
                    "tasks would deadlock. Use strategy='unmixed' or turn "
                    "the collective off (gather=False, a proposal stage's "
                    'sync_normalizers=False)'
                )
        if (
            is_model_wrapper(runner.model)
            and isinstance(
                runner.model, torch.nn.parallel.DistributedDataParallel
            )
            and not runner.model.find_unused_parameters
            and len(ratio_tasks) > 1
        ):
            raise ValueError(
                'multi-task training under DDP needs '
                '`find_unused_parameters = True` in the config: each '
                "iteration leaves the other tasks' heads unused"
            )

    def _resume_data_positions(self) -> None:
        """Set each task's sampler after the batches this rank drew for it
        in iterations ``0 .. iter-1`` (recomputed from the task sampler)."""
        counts = self.task_sampler.counts(self._iter, self.rank)
        for task, loader in self.dataloaders.items():
            sampler = getattr(loader, 'sampler', None)
            if isinstance(sampler, ResumableInfiniteSampler):
                sampler.set_consumed(counts[task] * loader.batch_size)
            elif counts[task]:
                self.runner.logger.warning(
                    f'task {task!r}: its sampler {type(sampler).__name__} '
                    'cannot skip; its data restarts from the beginning'
                )

    def _next_batch(self, task: str) -> dict:
        if task not in self._iterators:
            self._iterators[task] = iter(self.dataloaders[task])
        try:
            batch = next(self._iterators[task])
        except StopIteration:  # a finite sampler: start a new pass
            self._iterators[task] = iter(self.dataloaders[task])
            batch = next(self._iterators[task])
        batch = dict(batch)
        batch['task'] = task
        return batch

    def run(self):
        """Train ``max_iters`` iterations, one drawn task each."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._resume_data_positions()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            task = self.task_sampler.task_at(self._iter, self.rank)
            self.run_iter(self._next_batch(task))
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._iter >= self.val_begin
                and (
                    self._iter % self.val_interval == 0
                    or self._iter == self._max_iters
                )
            ):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


@LOOPS.register_module()
class MultiTaskValLoop(BaseLoop):
    """Validate every task in one loop; metrics prefixed by task.

    Args:
        runner (Runner): the runner.
        dataloader (dict): task name -> dataloader config.
        evaluator (dict): task name -> evaluator config (a metric config,
            a list of them, or an ``Evaluator``).
        fp16 (bool): run the model under autocast.
    """

    mode = 'val'

    def __init__(
        self,
        runner,
        dataloader: Dict[str, dict],
        evaluator: Dict[str, Union[dict, list, Evaluator]],
        fp16: bool = False,
    ) -> None:
        self._runner = runner
        self.dataloaders = _build_task_dataloaders(
            runner, dataloader, f'{self.mode}_dataloader'
        )
        self.dataloader = self.dataloaders
        _check_task_data(runner, self.dataloaders)
        if (
            not isinstance(evaluator, dict)
            or 'type' in evaluator
            or set(evaluator) != set(self.dataloaders)
        ):
            raise ValueError(
                f'{self.mode}_evaluator of a multi-task loop must be a dict '
                f'with one evaluator per task of {self.mode}_dataloader '
                f'{sorted(self.dataloaders)}'
            )
        self.evaluators: Dict[str, Evaluator] = {}
        for task, cfg in evaluator.items():
            ev = (
                cfg
                if isinstance(cfg, Evaluator)
                else runner.build_evaluator(cfg)
            )
            dataset = self.dataloaders[task].dataset
            if hasattr(dataset, 'metainfo'):
                ev.dataset_meta = dataset.metainfo
            self.evaluators[task] = ev
        self.fp16 = fp16

    def _step(self, data_batch: dict) -> Sequence:
        model = self.runner.model
        return (
            model.val_step(data_batch)
            if self.mode == 'val'
            else model.test_step(data_batch)
        )

    def run(self) -> dict:
        """Run all tasks; return ``{'<task>/<metric>': value}``."""
        self.runner.call_hook(f'before_{self.mode}')
        self.runner.call_hook(f'before_{self.mode}_epoch')
        self.runner.model.eval()
        metrics, batch_idx = {}, 0
        for task, loader in self.dataloaders.items():
            evaluator = self.evaluators[task]
            for data_batch in loader:
                data_batch = dict(data_batch)
                data_batch['task'] = task
                self.runner.call_hook(
                    f'before_{self.mode}_iter',
                    batch_idx=batch_idx,
                    data_batch=data_batch,
                )
                with torch.no_grad(), autocast(enabled=self.fp16):
                    outputs = self._step(data_batch)
                evaluator.process(data_samples=outputs, data_batch=data_batch)
                self.runner.call_hook(
                    f'after_{self.mode}_iter',
                    batch_idx=batch_idx,
                    data_batch=data_batch,
                    outputs=outputs,
                )
                batch_idx += 1
            task_metrics = evaluator.evaluate(len(loader.dataset))
            if not task_metrics:
                # e.g. mmdet's CocoMetric on empty predictions: say which
                # task, since save_best / logs silently miss its keys
                self.runner.logger.warning(
                    f'{self.mode}: the evaluator of task {task!r} returned '
                    'no metrics'
                )
            metrics.update({f'{task}/{k}': v for k, v in task_metrics.items()})
        self.runner.call_hook(f'after_{self.mode}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{self.mode}')
        return metrics


@LOOPS.register_module()
class MultiTaskTestLoop(MultiTaskValLoop):
    """:class:`MultiTaskValLoop` for ``test_dataloader`` /
    ``test_evaluator`` and the test hooks (``tools/test.py``)."""

    mode = 'test'
