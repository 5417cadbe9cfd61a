# Copyright (c) mmvfm contributors. All rights reserved.
from typing import Dict

import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseDataPreprocessor


@MODELS.register_module()
class MultiTaskDataPreprocessor(BaseDataPreprocessor):
    """Routes each batch to its task's data preprocessor.

    The multi-task loops tag every batch with ``data_batch['task']`` (the
    one route of the task name: :mod:`mmvfm.models.multi_task.base`); this
    module preprocesses it with ``preprocessors[task]`` (e.g. mmdet's
    ``DetDataPreprocessor`` with padding to 32 for detection, mmpretrain's
    ``ClsDataPreprocessor`` for classification; each is given the batch's
    own keys, the ones it knows) and keeps the key in its output, so that
    the model's ``forward`` receives it as ``task``.

    Args:
        preprocessors (dict): task name -> data preprocessor config.
    """

    def __init__(self, preprocessors: Dict[str, dict]) -> None:
        super().__init__()
        if not preprocessors:
            raise ValueError('preprocessors: one per task is needed')
        self.preprocessors = nn.ModuleDict(
            {
                task: MODELS.build(cfg) if isinstance(cfg, dict) else cfg
                for task, cfg in preprocessors.items()
            }
        )

    def forward(self, data: dict, training: bool = False) -> dict:
        """Args:
            data (dict): a collated batch with ``'task'``.

        Returns:
            dict: the task preprocessor's output plus ``'task'``.
        """
        if 'task' not in data:
            raise KeyError(
                'MultiTaskDataPreprocessor: the batch has no '
                "'task' (use a multi-task loop)"
            )
        task = data['task']
        if task not in self.preprocessors:
            raise KeyError(
                f'MultiTaskDataPreprocessor: no preprocessor for '
                f'task {task!r} (have {list(self.preprocessors)})'
            )
        batch = {k: v for k, v in data.items() if k != 'task'}
        out = dict(self.preprocessors[task](batch, training))
        out['task'] = task
        return out
