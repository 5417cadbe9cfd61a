# Copyright (c) mmvfm contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .fsdp2_state_dict_hook import FSDP2StateDictHook
from .multi_task_visualization_hook import MultiTaskVisualizationHook
from .task_aware_optimizer_hook import TaskAwareOptimizerHook
from .update_size_hook import UpdateSizeHook

__all__ = [
    'AtomicCheckpointHook',
    'FSDP2StateDictHook',
    'MultiTaskVisualizationHook',
    'TaskAwareOptimizerHook',
    'UpdateSizeHook',
]
