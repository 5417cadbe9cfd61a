# Copyright (c) mmvfm contributors. All rights reserved.
"""Tell :class:`~mmvfm.engine.optimizers.MTAdamW` the task of each
iteration of a multi-task train loop."""

import math
from typing import List, Optional

from mmdet.registry import HOOKS
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict

from mmvfm.engine.optimizers.mt_adamw import MTAdamW, MTAdamWOptimWrapper


def _mt_adamw_wrappers(optim_wrapper) -> List:
    """The optim wrappers (of a dict of them, too) whose optimizer is an
    :class:`MTAdamW`."""
    wrappers = (
        list(optim_wrapper.values())
        if isinstance(optim_wrapper, OptimWrapperDict)
        else [optim_wrapper]
    )
    return [w for w in wrappers if isinstance(w.optimizer, MTAdamW)]


@HOOKS.register_module()
class TaskAwareOptimizerHook(Hook):
    """Before every train iteration, ``optimizer.set_task(task)`` with the
    task of the batch (``data_batch['task']``, set by
    :class:`~mmvfm.engine.runner.MultiTaskIterBasedTrainLoop`: the task
    name's one route, :mod:`mmvfm.models.multi_task.base`), for every
    :class:`MTAdamW` of the runner's optim wrapper. The optimizer keeps it
    for the one ``step()`` of the iteration, which consumes it.

    Config::

        custom_hooks = [dict(type='TaskAwareOptimizerHook')]

    Raises at the start of training (``before_train``):

    - no :class:`MTAdamW` in ``optim_wrapper``;
    - a train loop without a ``task_sampler`` (not a multi-task loop);
    - the optimizer's ``task_ratios`` differ from the loop's (tasks, or
      ratios once normalised): :math:`1/s_k` must be the loop's;
    - ``strategy='mixed'`` with more than one rank: the ranks' gradients,
      averaged, mix tasks, so no single task normalises the step;
    - a plain ``OptimWrapper`` with ``clip_grad``: it clips before
      ``MTAdamW`` normalises; use ``type='MTAdamWOptimWrapper'``.

    And per iteration: a batch without ``'task'``, a task the optimizer has
    no ratio for.
    """

    priority = 'NORMAL'

    def before_train(self, runner) -> None:
        wrappers = _mt_adamw_wrappers(runner.optim_wrapper)
        if not wrappers:
            raise TypeError(
                'TaskAwareOptimizerHook: the optim_wrapper has no MTAdamW '
                "optimizer (optimizer=dict(type='MTAdamW', ...))"
            )
        sampler = getattr(runner.train_loop, 'task_sampler', None)
        if sampler is None:
            raise TypeError(
                'TaskAwareOptimizerHook needs a multi-task train loop '
                "(train_cfg=dict(type='MultiTaskIterBasedTrainLoop', ...)), "
                f'got {type(runner.train_loop).__name__}'
            )
        loop_ratios = dict(zip(sampler.tasks, map(float, sampler.probs)))
        if sampler.strategy == 'mixed' and get_world_size() > 1:
            raise ValueError(
                "MTAdamW with strategy='mixed' on several ranks: the "
                "averaged gradient mixes the ranks' tasks; use "
                "strategy='unmixed'"
            )
        for wrapper in wrappers:
            ratios = wrapper.optimizer.task_ratios
            if set(ratios) != set(loop_ratios) or any(
                not math.isclose(ratios[t], loop_ratios[t], rel_tol=1e-9)
                for t in ratios
            ):
                raise ValueError(
                    f'MTAdamW.task_ratios {ratios} (normalised) differ '
                    f"from the train loop's task_ratios {loop_ratios}"
                )
            if wrapper.clip_grad_kwargs and not isinstance(
                wrapper, MTAdamWOptimWrapper
            ):
                raise ValueError(
                    f'{type(wrapper).__name__} with clip_grad clips before '
                    'MTAdamW normalises the gradient; use '
                    "optim_wrapper=dict(type='MTAdamWOptimWrapper', ...)"
                )

    def before_train_iter(
        self, runner, batch_idx: int, data_batch: Optional[dict] = None
    ) -> None:
        if not isinstance(data_batch, dict) or 'task' not in data_batch:
            raise KeyError(
                "TaskAwareOptimizerHook: the batch has no 'task' (it is "
                'set by the multi-task train loop)'
            )
        for wrapper in _mt_adamw_wrappers(runner.optim_wrapper):
            wrapper.optimizer.set_task(data_batch['task'])
