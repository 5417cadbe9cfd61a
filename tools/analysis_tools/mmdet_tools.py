# Copyright (c) mmvfm contributors. All rights reserved.
"""mmdet's own analysis tools (shipped in its ``.mim/tools``) as modules,
found without importing mmdet (and through mmcv, torch)."""

import importlib.util
import os.path as osp
import sys
from types import ModuleType


def load_mmdet_tool(name: str) -> ModuleType:
    """mmdet's ``tools/analysis_tools/<name>`` as the module
    ``mmdet_<stem>``, registered in ``sys.modules`` (a process pool's
    workers find its functions by that name).

    Args:
        name (str): The tool's file name, e.g. ``'confusion_matrix.py'``.

    Returns:
        ModuleType: The executed module (loaded once per process).
    """
    module_name = 'mmdet_' + osp.splitext(name)[0]
    if module_name in sys.modules:
        return sys.modules[module_name]
    mmdet_dir = importlib.util.find_spec('mmdet').submodule_search_locations
    path = osp.join(mmdet_dir[0], '.mim', 'tools', 'analysis_tools', name)
    if not osp.isfile(path):
        raise SystemExit(
            f"error: mmdet's {name} is not at {path} (an mmdet install "
            'without its .mim tools? reinstall mmdet with pip)'
        )
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
