# Copyright (c) mmvfm contributors. All rights reserved.
from .base import BaseMultiTaskModel
from .caption_task_head import CaptionTaskHead
from .data_preprocessor import MultiTaskDataPreprocessor
from .multi_task_model import MultiTaskModel
from .task_heads import (
    ClsTaskHead,
    DetectorTaskHead,
    DetTaskHead,
    FeaturePassThrough,
)

__all__ = [
    'BaseMultiTaskModel',
    'CaptionTaskHead',
    'ClsTaskHead',
    'DetTaskHead',
    'DetectorTaskHead',
    'FeaturePassThrough',
    'MultiTaskDataPreprocessor',
    'MultiTaskModel',
]
