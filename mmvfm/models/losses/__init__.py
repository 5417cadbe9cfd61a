# Copyright (c) mmvfm contributors. All rights reserved.
"""Losses (registered into mmdet's ``MODELS``)."""

from .contrastive_loss import ContrastiveLoss
from .fgd_loss import FGDLoss
from .fgd_reference import FGDLossReference

__all__ = ['ContrastiveLoss', 'FGDLoss', 'FGDLossReference']
