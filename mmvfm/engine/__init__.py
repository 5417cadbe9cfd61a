# Copyright (c) mmvfm contributors. All rights reserved.
from .hooks import FSDP2StateDictHook, MultiTaskVisualizationHook
from .model_wrappers import FSDP2Wrapper
from .optimizers import TrainableOptimWrapperConstructor
from .runner import (
    MultiTaskIterBasedTrainLoop,
    MultiTaskTestLoop,
    MultiTaskValLoop,
    TaskSampler,
)

__all__ = [
    'FSDP2StateDictHook',
    'FSDP2Wrapper',
    'MultiTaskIterBasedTrainLoop',
    'MultiTaskTestLoop',
    'MultiTaskVisualizationHook',
    'MultiTaskValLoop',
    'TaskSampler',
    'TrainableOptimWrapperConstructor',
]
