# Copyright (c) mmvfm contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .multi_task_visualization_hook import MultiTaskVisualizationHook
from .task_aware_optimizer_hook import TaskAwareOptimizerHook

__all__ = [
    'AtomicCheckpointHook',
    'MultiTaskVisualizationHook',
    'TaskAwareOptimizerHook',
]
