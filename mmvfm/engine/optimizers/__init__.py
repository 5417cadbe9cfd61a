# Copyright (c) mmvfm contributors. All rights reserved.
from .distiller_constructor import DistillerOptimWrapperConstructor

__all__ = ['DistillerOptimWrapperConstructor']
