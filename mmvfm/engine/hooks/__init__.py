# Copyright (c) mmvfm contributors. All rights reserved.
from .multi_task_visualization_hook import MultiTaskVisualizationHook

__all__ = ['MultiTaskVisualizationHook']
