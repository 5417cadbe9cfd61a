# Copyright (c) mmvfm contributors. All rights reserved.
"""Check a config's local checkpoint paths before a run starts.

A toy config that starts from another run's checkpoint (the FGD toy
teacher, the ViSFT stages' CLIP and stage-1 checkpoints) names it as
``work_dirs/<config name>/iter_N.pth``. When that file is missing, the
error names the config field, the path and the command that writes it.
"""

import glob
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

__all__ = ['check_checkpoint_paths', 'checkpoint_fields']


def checkpoint_fields(cfg) -> Iterator[Tuple[str, str]]:
    """``(field, path)`` of every checkpoint a config loads: ``load_from``,
    any ``teacher_ckpt`` and every ``init_cfg`` of type ``Pretrained``."""
    if isinstance(cfg.get('load_from'), str):
        yield 'load_from', cfg['load_from']

    def walk(node, field):
        if isinstance(node, dict):
            kind = str(node.get('type', '')).split('.')[-1]
            if kind == 'Pretrained' and isinstance(
                node.get('checkpoint'), str
            ):
                yield f'{field}.checkpoint', node['checkpoint']
            for key, value in node.items():
                if key == 'teacher_ckpt' and isinstance(value, str):
                    yield f'{field}.{key}', value
                else:
                    yield from walk(value, f'{field}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                yield from walk(value, f'{field}[{i}]')

    yield from walk(cfg.get('model'), 'model')


def _config_roots() -> List[str]:
    """Folders whose ``configs/`` (and ``projects/*/configs/``) may hold
    the config that writes a ``work_dirs/<name>/`` checkpoint."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    return [
        os.getcwd(),
        osp.dirname(package),  # a checkout (editable install)
        osp.join(package, '.mim'),  # a wheel
    ]


def producing_config(path: str) -> Optional[str]:
    """The config that writes ``path`` when it is ``work_dirs/<name>/...``
    and a config ``<name>.py`` exists; None otherwise."""
    parts = osp.normpath(path).split(os.sep)
    if 'work_dirs' not in parts[:-2]:
        return None
    name = parts[parts.index('work_dirs') + 1]
    for root in _config_roots():
        for pattern in ('configs/**/', 'projects/*/configs/**/'):
            found = glob.glob(
                osp.join(root, pattern, name + '.py'), recursive=True
            )
            if found:
                rel = osp.relpath(found[0])
                return found[0] if rel.startswith('..') else rel
    return None


def check_checkpoint_paths(cfg) -> List[str]:
    """Check that every local checkpoint a config loads exists.

    Returns:
        list[str]: the checked paths.

    Raises:
        FileNotFoundError: naming the field, the path and, for a
            ``work_dirs/<config name>/`` file, the command that writes it.
    """
    checked = []
    for field, path in checkpoint_fields(cfg):
        if not path or '://' in path:
            continue
        if osp.isfile(osp.expanduser(path)):
            checked.append(path)
            continue
        config = producing_config(path)
        hint = (
            f'; it is written by: python tools/train.py {config}'
            if config
            else ''
        )
        raise FileNotFoundError(
            f'{field}: checkpoint "{path}" does not exist{hint}'
        )
    return checked
