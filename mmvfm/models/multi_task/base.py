# Copyright (c) mmvfm contributors. All rights reserved.
"""The task interface every multi-task model shares, and the multi-task
loops rely on (:mod:`mmvfm.engine.runner.multi_task_loops`).

The task name travels one route, the batch: the train and val loops put it
in ``data_batch['task']``; ``TaskAwareOptimizerHook`` reads it there
(``before_train_iter``) to tell ``MTAdamW`` which task's step it is;
``MultiTaskDataPreprocessor`` routes the batch to ``preprocessors[task]``
and passes the key on, so mmengine's ``train_step`` / ``val_step`` call
``forward(**data, mode=...)`` with ``task=``. The batch is the one object
that the loop, every hook and the model all receive for an iteration, so
nothing has to be set aside and read back (a model or loop attribute
would be stale for a hook that runs out of order, and wrong under
``strategy='mixed'`` where each rank draws its own task).
"""

from typing import Dict, List, Optional, Sequence, Union

from mmengine.model import BaseModel
from torch import Tensor


class BaseMultiTaskModel(BaseModel):
    """A model with named tasks, one per batch.

    Subclasses (:class:`~mmvfm.models.multi_task.MultiTaskModel`,
    :class:`~mmvfm.models.uniperceiver.UniPerceiverV2`) give :attr:`tasks`
    and the three per-task steps :meth:`task_loss`, :meth:`predict` and
    :meth:`_forward`; this class owns what is common:

    - ``forward(inputs, data_samples, mode, task)``: the task is required
      and checked, then ``mode`` picks the step;
    - loss naming and weights (:meth:`loss`): the task's raw losses get the
      prefix ``'<task>.'`` (``'det.loss_cls'``; mmengine back-propagates
      keys containing ``loss``) and the keys containing ``loss`` are scaled
      by :meth:`loss_weight`;
    - what the loops ask of a model at build time:
      :meth:`task_uses_collective` (refused under ``strategy='mixed'``) and
      :meth:`check_task_data` (a task's dataset checked against the task).

    Task names may not contain ``'.'`` or ``'/'``: they prefix the loss keys
    and the metrics (``'det/coco/bbox_mAP'``).
    """

    @property
    def tasks(self) -> List[str]:
        """The task names, in config order."""
        raise NotImplementedError

    @staticmethod
    def check_task_names(names: Sequence[str]) -> None:
        """ValueError for an empty task list or a name with a prefix
        separator."""
        if not names:
            raise ValueError('tasks: at least one task is needed')
        for task in names:
            if '.' in task or '/' in task:
                raise ValueError(
                    f'task name {task!r} must not contain '
                    "'.' or '/' (used as prefixes)"
                )

    def loss_weight(self, task: str) -> float:
        """The weight of ``task``'s losses (default 1)."""
        return 1.0

    def task_uses_collective(self, task: str) -> bool:
        """Whether ``task``'s loss runs a cross-rank collective (default
        False)."""
        return False

    def check_task_data(self, task: str, metainfo: dict) -> None:
        """Check ``task``'s dataset (its ``metainfo``) at build time; raise
        ValueError naming the task if it does not fit. Default: accepts."""

    # ------------------------------------------------------------- steps
    def task_loss(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """The losses (and logged values) of ``task``, unprefixed and
        unweighted."""
        raise NotImplementedError

    def predict(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ) -> list:
        """The data samples with ``task``'s predictions."""
        raise NotImplementedError

    def _forward(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ):
        """The raw outputs of ``task`` (``mode='tensor'``)."""
        raise NotImplementedError

    def loss(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ) -> dict:
        """:meth:`task_loss` named ``'<task>.<key>'``, each key containing
        ``loss`` times :meth:`loss_weight` (a list of tensors element-wise;
        weight 1 leaves the values as they are)."""
        weight = self.loss_weight(task)
        return {
            f'{task}.{key}': _scale(value, weight) if 'loss' in key else value
            for key, value in self.task_loss(
                inputs, data_samples, task
            ).items()
        }

    def forward(
        self,
        inputs: Tensor,
        data_samples: Optional[Sequence] = None,
        mode: str = 'tensor',
        task: Optional[str] = None,
    ):
        """Args:
            inputs (Tensor): the preprocessed batch ``[N, C, H, W]``.
            data_samples (list): the task's data samples.
            mode (str): ``'loss'``, ``'predict'`` or ``'tensor'``.
            task (str): the batch's task (``data_batch['task']``, set by
                the multi-task loops).

        Returns:
            dict of prefixed losses / list of data samples / raw outputs.
        """
        name = type(self).__name__
        if task is None:
            raise ValueError(
                f'{name} needs the task of the batch: train and evaluate it '
                'with the multi-task loops and MultiTaskDataPreprocessor'
            )
        if task not in self.tasks:
            raise KeyError(
                f'{name}: no head for task {task!r} (tasks: {self.tasks})'
            )
        if mode == 'loss':
            return self.loss(inputs, data_samples, task)
        if mode == 'predict':
            return self.predict(inputs, data_samples, task)
        if mode == 'tensor':
            return self._forward(inputs, data_samples, task)
        raise ValueError(f'mode must be loss, predict or tensor, got {mode!r}')


def _scale(value, weight: float):
    if weight == 1.0:
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(v * weight for v in value)
    return value * weight
