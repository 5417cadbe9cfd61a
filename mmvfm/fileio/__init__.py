# Copyright (c) mmvfm contributors. All rights reserved.
"""Reading the files a user gives us: checkpoints and results pickles, safely.

Keep this package light (torch and mmengine only, imported lazily where
possible): :mod:`mmvfm.compat` installs its loaders before mmdet builds
anything.
"""

from .checkpoint_loaders import register_safe_checkpoint_loaders
from .last_checkpoint import find_latest_checkpoint
from .safe_load import (
    CheckpointError,
    CorruptCheckpointError,
    TorchScriptArchiveError,
    UnsafeCheckpointError,
    safe_load,
    safe_load_bytes,
)
from .safe_load_results import safe_load_results

__all__ = [
    'CheckpointError',
    'CorruptCheckpointError',
    'TorchScriptArchiveError',
    'UnsafeCheckpointError',
    'find_latest_checkpoint',
    'register_safe_checkpoint_loaders',
    'safe_load',
    'safe_load_bytes',
    'safe_load_results',
]
