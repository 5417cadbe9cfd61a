# Copyright (c) mmvfm contributors. All rights reserved.
"""Multi-task training and evaluation loops on mmengine's Runner.

Each task keeps its own dataloader (dataset, pipeline, batch size,
collate); the train loop draws the task of every iteration with a
:class:`~mmvfm.engine.runner.TaskSampler` and hands the batch, tagged with
``data_batch['task']``, to the model's ``train_step``. The val/test loops
run every task's dataloader and evaluator in one pass and report all
metrics prefixed by the task (``'det/coco/bbox_mAP'``), so ``save_best``
and the logger work on them as on single-task metrics.

The task name has one route, the batch: ``data_batch['task']`` is what
``TaskAwareOptimizerHook`` reads (and tells ``MTAdamW``),
``MultiTaskDataPreprocessor`` routes by and passes on, and the model's
``forward(task=...)`` receives (:mod:`mmvfm.models.multi_task.base`).

The model is a :class:`~mmvfm.models.multi_task.BaseMultiTaskModel`:
the loops read its ``tasks``, ``task_uses_collective`` and
``check_task_data`` at build time. The train loop refuses another
model; the val/test loops also evaluate one (a CLIP model on a retrieval
and a zero-shot set: one model, several evaluation sets, no task
routing), without the dataset checks.

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
from torch.utils.data import DataLoader

from mmvfm.datasets.samplers import ResumableInfiniteSampler
from mmvfm.models.multi_task.base import BaseMultiTaskModel

from .task_sampler import TaskSampler


class TaskDataloaders:
    """``task -> DataLoader`` (``[task]``, ``in``, iteration over the task
    names, ``keys()`` / ``values()`` / ``items()``), with what hooks expect
    of one dataloader: ``len()`` (all tasks' batches) and ``.dataset`` (the
    first task's).

    Not a ``dict``: mmengine's ``BaseLoop`` builds a dataloader from any
    dict it is given, and takes this one as built.
    """

    def __init__(self, loaders: Dict[str, DataLoader]) -> None:
        self._loaders = dict(loaders)

    def __getitem__(self, task: str) -> DataLoader:
        return self._loaders[task]

    def __contains__(self, task) -> bool:
        return task in self._loaders

    def __iter__(self):
        return iter(self._loaders)

    def keys(self):
        return self._loaders.keys()

    def values(self):
        return self._loaders.values()

    def items(self):
        return self._loaders.items()

    @property
    def dataset(self):
        return next(iter(self._loaders.values())).dataset

    def __len__(self) -> int:  # number of batches of all tasks
        return sum(len(dl) for dl in self._loaders.values())


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
    return TaskDataloaders(
        {
            task: (
                runner.build_dataloader(cfg, seed=runner.seed)
                if isinstance(cfg, dict)
                else cfg
            )
            for task, cfg in dataloaders.items()
        }
    )


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _multi_task_model(runner, loop: str) -> BaseMultiTaskModel:
    """The runner's model, unwrapped; TypeError naming its class unless it
    is a :class:`BaseMultiTaskModel`."""
    model = _unwrap(runner.model)
    if not isinstance(model, BaseMultiTaskModel):
        raise TypeError(
            f'{loop} trains a multi-task model (a BaseMultiTaskModel: '
            'MultiTaskModel, UniPerceiverV2, or a subclass of '
            'mmvfm.models.multi_task.BaseMultiTaskModel), got '
            f'{type(model).__module__}.{type(model).__name__}'
        )
    return model


def _check_task_data(model: BaseMultiTaskModel, dataloaders) -> None:
    """``model.check_task_data(task, metainfo)`` for each task's dataset
    (e.g. its class list against the task's candidates)."""
    for task, loader in dataloaders.items():
        metainfo = getattr(getattr(loader, 'dataset', None), 'metainfo', None)
        if metainfo is not None:
            model.check_task_data(task, metainfo)


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

    From :class:`IterBasedTrainLoop` as it is: ``__init__`` (given the
    built :class:`TaskDataloaders`: the iteration bookkeeping, the
    visualizer's ``dataset_meta`` from the first task's dataset, the
    dynamic validation interval), ``run_iter``, the ``iter`` /
    ``max_iters`` / ``epoch`` properties. ``run`` is its own, for two
    steps ``IterBasedTrainLoop.run`` does with its one dataloader
    iterator: the batch of an iteration comes from the drawn task's
    dataloader (each task has its own iterator), and a resumed run
    places each task's sampler after the batches it drew
    (``ResumableInfiniteSampler.set_consumed``) instead of drawing and
    discarding ``iter`` batches.

    Raises at build time: a model that is not a
    :class:`~mmvfm.models.multi_task.BaseMultiTaskModel`; tasks of the
    ratios, the dataloaders and the model that differ; a dataset the model's
    ``check_task_data(task, metainfo)`` refuses; ``mixed`` with a task
    whose head runs a cross-rank collective (the ranks would wait on each
    other in different heads and deadlock); DDP without
    ``find_unused_parameters`` (each iteration leaves the other tasks'
    heads unused).
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
        # self.dataloader (what the runner and hooks read) is the same
        super().__init__(
            runner,
            self.dataloaders,
            max_iters,
            val_begin=val_begin,
            val_interval=val_interval,
            dynamic_intervals=dynamic_intervals,
        )
        # one iterator per task (_next_batch), not mmengine's single one
        self.dataloader_iterator = None
        self._iterators: Dict[str, object] = {}
        self.task_sampler = TaskSampler(
            task_ratios, strategy, runner.seed if seed is None else seed
        )
        self._check_tasks(runner)
        _check_task_data(
            _multi_task_model(runner, type(self).__name__), self.dataloaders
        )
        self.rank = get_dist_info()[0]

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
        model = _multi_task_model(runner, type(self).__name__)
        ratio_tasks = set(self.task_sampler.tasks)
        loader_tasks = set(self.dataloaders)
        if ratio_tasks != loader_tasks:
            raise ValueError(
                f'task_ratios {sorted(ratio_tasks)} and train_dataloader '
                f'{sorted(loader_tasks)} must name the same tasks'
            )
        model_tasks = list(model.tasks)
        if not ratio_tasks <= set(model_tasks):
            raise ValueError(
                f'the model has no head for {sorted(ratio_tasks - set(model_tasks))} '  # noqa: E501
                f'(its tasks: {model_tasks})'
            )
        if self.task_sampler.strategy == 'mixed':
            collective = [
                t for t in ratio_tasks if model.task_uses_collective(t)
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

    The model: a :class:`~mmvfm.models.multi_task.BaseMultiTaskModel`
    (each task's dataset checked by its ``check_task_data`` at build
    time), or any model evaluated on several sets (its data preprocessor
    ignores the batch's ``'task'``).

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
        self.dataloaders = _build_task_dataloaders(
            runner, dataloader, f'{self.mode}_dataloader'
        )
        super().__init__(runner, self.dataloaders)  # self.dataloader
        model = _unwrap(runner.model)
        if isinstance(model, BaseMultiTaskModel):
            _check_task_data(model, self.dataloaders)
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
