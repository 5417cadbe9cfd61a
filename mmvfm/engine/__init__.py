# Copyright (c) mmvfm contributors. All rights reserved.
from .hooks import MultiTaskVisualizationHook
from .optimizers import TrainableOptimWrapperConstructor
from .runner import (
    MultiTaskIterBasedTrainLoop,
    MultiTaskTestLoop,
    MultiTaskValLoop,
    TaskSampler,
)

__all__ = [
    'MultiTaskIterBasedTrainLoop',
    'MultiTaskTestLoop',
    'MultiTaskVisualizationHook',
    'MultiTaskValLoop',
    'TaskSampler',
    'TrainableOptimWrapperConstructor',
]
