# Copyright (c) mmvfm contributors. All rights reserved.
from .fsdp2 import FSDP2StateDictHook, FSDP2Wrapper

__all__ = ['FSDP2StateDictHook', 'FSDP2Wrapper']
