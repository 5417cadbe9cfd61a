# Copyright (c) mmvfm contributors. All rights reserved.
from .lora import (
    apply_lora,
    build_lora,
    lora_layers,
    merge_lora,
    set_lora_enabled,
    unmerge_lora,
)
from .lora_checkpoint import (
    LORA_FORMAT,
    MMPRETRAIN_TO_VISFT,
    VISFT_TO_MMPRETRAIN,
    load_lora,
    lora_state,
    merged_state_dict,
    rename_keys,
    save_lora,
)
from .lora_linear import LoRALinear

__all__ = [
    'LORA_FORMAT',
    'MMPRETRAIN_TO_VISFT',
    'VISFT_TO_MMPRETRAIN',
    'load_lora',
    'lora_state',
    'merged_state_dict',
    'rename_keys',
    'save_lora',
    'LoRALinear',
    'apply_lora',
    'build_lora',
    'lora_layers',
    'merge_lora',
    'set_lora_enabled',
    'unmerge_lora',
]
