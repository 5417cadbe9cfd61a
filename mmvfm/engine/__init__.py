# Copyright (c) mmvfm contributors. All rights reserved.
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
    'MultiTaskValLoop',
    'TaskSampler',
    'TrainableOptimWrapperConstructor',
]
