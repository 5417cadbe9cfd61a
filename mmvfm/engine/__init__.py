# Copyright (c) mmvfm contributors. All rights reserved.
from .optimizers import DistillerOptimWrapperConstructor

__all__ = ['DistillerOptimWrapperConstructor']
