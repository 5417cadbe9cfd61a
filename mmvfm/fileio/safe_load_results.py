# Copyright (c) mmvfm contributors. All rights reserved.
"""Reading a results pickle (``tools/test.py --out``) without running code."""

import os.path as osp
import pickle
import re
import warnings

import torch

from .safe_load import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    safe_load_bytes,
)

__all__ = ['safe_load_results']

# how a plain pickle stores a tensor's storage: torch.save bytes, which
# torch reads back with full unpickling
_STORAGE_FROM_BYTES = 'torch.storage._load_from_bytes'


def _reason(error: BaseException) -> str:
    text = str(error)
    match = re.search(
        r'GLOBAL \S+|reduce for \S+|Unsupported operand \d+', text
    )
    if match:
        return match.group(0)
    return (
        text.strip().split('\n')[0].split('. ')[0][:200]
        or type(error).__name__
    )


def safe_load_results(path: str) -> list:
    """The predictions ``tools/test.py --out`` dumped, read without running
    code.

    The file is a plain pickle (protocol 2, ``mmengine.dump``): it is read
    with torch's weights-only unpickler, which builds tensors, numpy arrays
    and plain containers only (and the classes :mod:`mmvfm.compat`
    allow-lists); each tensor's storage is a ``torch.save`` file inside it,
    read with :func:`mmvfm.fileio.safe_load_bytes`.

    Returns:
        list[dict]: one dict per image (``img_id``, ``pred_instances``...).

    Raises:
        FileNotFoundError: naming the path.
        UnsafeCheckpointError: objects that could run code; not loaded.
        CorruptCheckpointError: not such a pickle (truncated, another
            format), or not a list of per-image dicts.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'results file "{path}" does not exist')
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is None:  # pragma: no cover - torch < 2.5
        raise CorruptCheckpointError(
            path, f'reading results file "{path}" needs torch >= 2.5'
        )
    from torch import _weights_only_unpickler

    def storage_from_bytes(data: bytes):
        return safe_load_bytes(data, 'cpu', source=f'a tensor in {path}')

    with safe_globals([(storage_from_bytes, _STORAGE_FROM_BYTES)]):
        with open(path, 'rb') as f, warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Detected pickle')
            try:
                unpickler = _weights_only_unpickler.Unpickler(
                    f, encoding='utf-8'
                )
                results = unpickler.load()
            except CheckpointError:
                raise
            except Exception as e:
                reason = _reason(e)
                if isinstance(e, pickle.UnpicklingError) and re.match(
                    r'GLOBAL|reduce', reason
                ):
                    raise UnsafeCheckpointError(
                        path,
                        f'results file "{path}" contains objects that could '
                        f'run code when unpickled ({reason}), so it was not '
                        'loaded. mmvfm reads results weights-only: tensors, '
                        'numpy arrays and plain containers, what '
                        'tools/test.py --out writes.',
                    ) from None
                raise CorruptCheckpointError(
                    path,
                    f'results file "{path}" is not a results pickle of '
                    'tools/test.py --out: truncated, or another format or '
                    f'pickle protocol than mmengine.dump writes ({reason}); '
                    'it was not loaded',
                ) from None
    if not (
        isinstance(results, list)
        and results
        and all(isinstance(r, dict) for r in results)
    ):
        raise CorruptCheckpointError(
            path,
            f'results file "{path}" holds {type(results).__name__}, not the '
            'list of per-image predictions tools/test.py --out writes',
        )
    return results
