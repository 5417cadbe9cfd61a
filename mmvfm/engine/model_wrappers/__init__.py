# Copyright (c) mmvfm contributors. All rights reserved.
from .fsdp2 import FSDP2Wrapper

__all__ = ['FSDP2Wrapper']


def __getattr__(name: str):
    # the hook moved to engine/hooks/; its old import path keeps working
    if name == 'FSDP2StateDictHook':
        import warnings

        from ..hooks.fsdp2_state_dict_hook import FSDP2StateDictHook

        warnings.warn(
            'mmvfm.engine.model_wrappers.FSDP2StateDictHook moved to '
            'mmvfm.engine.hooks.FSDP2StateDictHook',
            DeprecationWarning,
            stacklevel=2,
        )
        return FSDP2StateDictHook
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
