# Copyright (c) mmvfm contributors. All rights reserved.
"""Distillation losses (registered into mmdet's ``MODELS``)."""

from .fgd_loss import FGDLoss
from .fgd_reference import FGDLossReference

__all__ = ['FGDLoss', 'FGDLossReference']
