# Copyright (c) mmvfm contributors. All rights reserved.
from .gated_fpn import GatedFPN

__all__ = ['GatedFPN']
