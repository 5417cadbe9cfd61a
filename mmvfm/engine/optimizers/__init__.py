# Copyright (c) mmvfm contributors. All rights reserved.
from .mt_adamw import MTAdamW, MTAdamWOptimWrapper
from .trainable_constructor import TrainableOptimWrapperConstructor

__all__ = [
    'MTAdamW',
    'MTAdamWOptimWrapper',
    'TrainableOptimWrapperConstructor',
]
