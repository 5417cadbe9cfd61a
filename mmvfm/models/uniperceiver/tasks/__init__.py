# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's task types, one module each, registered in
:data:`~mmvfm.models.uniperceiver.task_cfg.UNIPERCEIVER_TASKS` under the
``type`` names of the model's ``tasks`` config (in this import order)."""

from .base import UniPerceiverTask

# the registration order is the order of the type names: not sorted
# isort: off
from .classification import ClassificationTask
from .retrieval import RetrievalTask
from .captioning import CaptioningTask
from .regions import RegionTask

# isort: on

__all__ = [
    'CaptioningTask',
    'ClassificationTask',
    'RegionTask',
    'RetrievalTask',
    'UniPerceiverTask',
]
