# Copyright (c) mmvfm contributors. All rights reserved.
from .lora import (
    apply_lora,
    build_lora,
    lora_layers,
    merge_lora,
    set_lora_enabled,
    unmerge_lora,
)
from .lora_linear import LoRALinear

__all__ = [
    'LoRALinear',
    'apply_lora',
    'build_lora',
    'lora_layers',
    'merge_lora',
    'set_lora_enabled',
    'unmerge_lora',
]
