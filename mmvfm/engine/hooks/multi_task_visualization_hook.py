# Copyright (c) mmvfm contributors. All rights reserved.
"""Draw each task's val/test predictions with that task's own hook."""

import os.path as osp
from typing import Dict, Optional, Sequence

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class MultiTaskVisualizationHook(Hook):
    """Route every val/test batch of a multi-task loop to its task's
    visualization hook.

    One ``DetVisualizationHook`` in a multi-task config would draw every
    task's samples: a classification sample has no ``pred_instances``, so
    it is drawn bare, and since the tasks share images its file overwrites
    the detection drawing of the same image. This hook keeps one hook per
    task, draws only the tasks that have one, writes each task under
    ``<test_out_dir>/<task>/`` and sets the visualizer's ``dataset_meta``
    (class names, palette) to the task's dataset before drawing.

    ``tools/test.py --show/--show-dir`` sets ``draw``, ``show``,
    ``wait_time`` and ``test_out_dir`` on this hook as on mmdet's; they are
    passed on to every task hook (overriding the task's own values).

    Args:
        task_hooks (dict): task name -> hook config, e.g.
            ``dict(det=dict(type='DetVisualizationHook', score_thr=0.3))``.
            Tasks not named are not drawn.
        draw (bool): draw at all. Defaults to False.
        interval (int): during validation, draw every this many batches.
        show (bool): show the drawings in a window.
        wait_time (float): seconds each shown drawing stays.
        test_out_dir (str, optional): folder (under the run's
            ``work_dir/timestamp``) of the test drawings; each task gets a
            sub-folder.

    Raises at the start of a run: a task of ``task_hooks`` that the
    val/test loop does not have.
    """

    priority = 'NORMAL'

    def __init__(
        self,
        task_hooks: Dict[str, dict],
        draw: bool = False,
        interval: int = 50,
        show: bool = False,
        wait_time: float = 0.0,
        test_out_dir: Optional[str] = None,
    ) -> None:
        if not isinstance(task_hooks, dict) or not task_hooks:
            raise TypeError(
                'MultiTaskVisualizationHook.task_hooks must be a non-empty '
                'dict of task name -> hook config, got '
                f'{type(task_hooks).__name__}'
            )
        self.hooks = {}
        for task, cfg in task_hooks.items():
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise TypeError(
                    f'MultiTaskVisualizationHook.task_hooks.{task} must be '
                    'a hook config with a type'
                )
            cfg = dict(
                cfg,
                draw=draw,
                interval=interval,
                show=show,
                wait_time=wait_time,
                test_out_dir=(
                    osp.join(test_out_dir, task) if test_out_dir else None
                ),
            )
            self.hooks[task] = HOOKS.build(cfg)

    @staticmethod
    def _loop_tasks(loop) -> Dict[str, object]:
        """task -> dataset of a multi-task val/test loop (empty for a
        single-task loop)."""
        loaders = getattr(loop, 'dataloaders', None) or {}
        return {task: dl.dataset for task, dl in loaders.items()}

    def _check(self, runner, loop, mode: str) -> None:
        datasets = self._loop_tasks(loop)
        unknown = sorted(set(self.hooks) - set(datasets))
        if unknown:
            raise ValueError(
                f'MultiTaskVisualizationHook.task_hooks names {unknown}, '
                f'which the {mode} loop does not have (its tasks: '
                f'{sorted(datasets)})'
            )

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop, 'val')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop, 'test')

    def _route(
        self, runner, loop, stage: str, batch_idx, data_batch, outputs
    ) -> None:
        task = data_batch.get('task') if isinstance(data_batch, dict) else None
        hook = self.hooks.get(task)
        if hook is None:
            return
        dataset = self._loop_tasks(loop).get(task)
        meta = getattr(dataset, 'metainfo', None)
        if meta is not None:
            runner.visualizer.dataset_meta = meta
        getattr(hook, f'after_{stage}_iter')(
            runner, batch_idx, data_batch, outputs
        )

    def after_val_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: Optional[dict] = None,
        outputs: Optional[Sequence] = None,
    ) -> None:
        self._route(
            runner, runner.val_loop, 'val', batch_idx, data_batch, outputs
        )

    def after_test_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: Optional[dict] = None,
        outputs: Optional[Sequence] = None,
    ) -> None:
        self._route(
            runner, runner.test_loop, 'test', batch_idx, data_batch, outputs
        )
