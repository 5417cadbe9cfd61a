# Copyright (c) mmvfm contributors. All rights reserved.
"""mmvfm: vision-foundation-model methods as an MMDetection 3.x add-on.

Importing mmvfm (directly, or through ``custom_imports`` in a config)
checks the versions of the OpenMMLab stack, applies the stack fixes of
:mod:`mmvfm.compat` and registers mmvfm's modules into mmdet's registries.
"""

from .version import __version__, check_versions, version_info

check_versions()

from .compat import apply_compat  # noqa: E402

apply_compat()

from . import datasets, engine, evaluation, models  # noqa: E402,F401
from .utils import register_all_modules  # noqa: E402,F401

__all__ = ['__version__', 'version_info', 'register_all_modules']
