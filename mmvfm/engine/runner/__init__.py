# Copyright (c) mmvfm contributors. All rights reserved.
from .multi_task_loops import (
    MultiTaskIterBasedTrainLoop,
    MultiTaskTestLoop,
    MultiTaskValLoop,
    TaskDataloaders,
)
from .task_sampler import TaskSampler

__all__ = [
    'MultiTaskIterBasedTrainLoop',
    'MultiTaskTestLoop',
    'MultiTaskValLoop',
    'TaskDataloaders',
    'TaskSampler',
]
