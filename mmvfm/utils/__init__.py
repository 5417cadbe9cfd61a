# Copyright (c) mmvfm contributors. All rights reserved.
"""Run setup and the checks of a config before it runs: registering mmvfm
into mmdet's scope, resolving and loading configs, and naming the data and
checkpoint files a config needs but lacks.

Tools and configs use these; :mod:`mmvfm.models.common` holds the helpers of
model code. Nothing here imports :mod:`mmvfm.models` at module level
(``register_all_modules`` imports the package when called, as mmdet's does).
"""

# Keep this module light: mmvfm/__init__.py imports it before the stack
# fixes of mmvfm.compat are applied, so nothing here may import
# mmdet.models, mmpretrain or torchvision at module level.
from ..version import check_versions
from .checkpoint_check import check_checkpoint_paths
from .config_path import (
    drop_pretrained,
    load_config,
    load_run_config,
    resolve_config_path,
)
from .data_check import check_data_paths
from .setup_env import destroy_process_group, register_all_modules

__all__ = [
    'check_checkpoint_paths',
    'check_data_paths',
    'check_versions',
    'destroy_process_group',
    'drop_pretrained',
    'load_config',
    'load_run_config',
    'register_all_modules',
    'resolve_config_path',
]
