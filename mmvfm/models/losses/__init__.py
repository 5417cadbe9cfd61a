# Copyright (c) mmvfm contributors. All rights reserved.
"""Losses (registered into mmdet's ``MODELS``)."""

from .contrastive_loss import ContrastiveLoss
from .fgd_loss import FGDLoss

# FGDLossReference (the test oracle) moved to mmvfm.testing
__all__ = ['ContrastiveLoss', 'FGDLoss']
