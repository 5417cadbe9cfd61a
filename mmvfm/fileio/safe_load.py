# Copyright (c) mmvfm contributors. All rights reserved.
"""The one loader for every checkpoint-like file mmvfm reads.

A ``.pth`` file is a pickle, and unpickling an untrusted pickle runs any
code its author chose. :func:`safe_load` reads checkpoints *weights-only*:
tensors, plain containers, numbers, strings and the classes of mmengine's
training state that :mod:`mmvfm.compat` allow-lists (``HistoryBuffer``,
numpy arrays and scalars). Anything else is refused before it is built.

Errors name the file and say what is wrong with it, in words a user can act
on; they never suggest ``weights_only=False``:

- :class:`UnsafeCheckpointError`: the file holds objects that could run
  code when unpickled (the refused globals are named); it was not loaded.
- :class:`CorruptCheckpointError`: the file is not a checkpoint torch can
  read: empty, truncated, random bytes, or not a ``torch.save`` file.
- :class:`TorchScriptArchiveError`: a TorchScript archive (OpenAI's CLIP
  ``.pt`` releases), which ``torch.jit.load`` reads, not ``torch.load``.

``allow_unsafe=True`` is the explicit opt-in to full unpickling, for a file
the user trusts that holds classes outside the allow-list (e.g. a DeiT or
timm training checkpoint storing ``argparse.Namespace`` args). It warns.
No mmvfm code path sets it; converter tools expose it as ``--unsafe-load``.
"""

import io
import os
import os.path as osp
import pickle
import pickletools
import re
import warnings
import zipfile
from typing import IO, Any, List, Optional, Union

import torch

FileLike = Union[str, os.PathLike, IO[bytes]]

__all__ = [
    'CheckpointError',
    'CorruptCheckpointError',
    'TorchScriptArchiveError',
    'UnsafeCheckpointError',
    'safe_load',
]

_NOT_LOADED = 'it was not loaded'
_WHAT_IS_ALLOWED = (
    'mmvfm loads checkpoints weights-only: tensors, plain containers, '
    "numbers, strings and mmengine's training state"
)


class CheckpointError(RuntimeError):
    """A checkpoint-like file that was refused or could not be read.

    Attributes:
        path (str): the file (or URL) as the user named it.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class UnsafeCheckpointError(CheckpointError):
    """The file holds objects that could run code when unpickled."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a checkpoint: empty, truncated or random bytes."""


class TorchScriptArchiveError(CheckpointError):
    """A TorchScript archive passed where a checkpoint was expected."""


def _name(file: FileLike, source: Optional[str]) -> str:
    if source:
        return source
    if isinstance(file, (str, os.PathLike)):
        return os.fspath(file)
    return getattr(file, 'name', '<file object>')


def _check_path(path: str, name: str) -> None:
    if not path:
        raise FileNotFoundError(
            'checkpoint path is empty (an empty `last_checkpoint` file, or '
            'an unset `load_from` / `checkpoint` field?)'
        )
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint "{name}" does not exist')
    if osp.isdir(path):
        raise IsADirectoryError(
            f'checkpoint "{name}" is a directory, not a file'
        )
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(
            name,
            f'checkpoint "{name}" is empty (0 bytes): not a checkpoint (an '
            f'interrupted download or write?); {_NOT_LOADED}',
        )


def _pickles_complete(stream: IO[bytes], count: int) -> bool:
    """Whether ``stream`` starts with ``count`` complete pickles. Reads the
    opcodes only (``pickletools.genops`` builds nothing)."""
    try:
        for _ in range(count):
            for _op in pickletools.genops(stream):
                pass
    except Exception:
        return False
    return True


def _is_damaged(file: FileLike) -> bool:
    """Whether a file that the weights-only unpickler refused is damaged
    rather than hostile: a zip whose records fail their CRC, or a legacy
    (pre-1.6) file whose four leading pickles do not parse."""
    opened = open(file, 'rb') if isinstance(file, (str, os.PathLike)) else file
    try:
        opened.seek(0)
        if zipfile.is_zipfile(opened):
            opened.seek(0)
            try:
                with zipfile.ZipFile(opened) as archive:
                    return archive.testzip() is not None
            except (zipfile.BadZipFile, OSError, EOFError):
                return True
        opened.seek(0)
        # legacy format: magic number, protocol, sys info, then the object
        return not _pickles_complete(opened, 4)
    finally:
        if opened is not file:
            opened.close()
        else:
            opened.seek(0)


def _refused_globals(file: FileLike) -> List[str]:
    """The globals of a ``torch.save`` zip outside the allow-list (read
    statically from ``data.pkl``; nothing is imported or built)."""
    try:
        if not isinstance(file, (str, os.PathLike)):
            file.seek(0)
        found = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:
        return []
    finally:
        if not isinstance(file, (str, os.PathLike)):
            file.seek(0)
    return sorted(found)


def _reason(error: BaseException) -> str:
    """The one line of torch's message that says what was refused, without
    its advice (which suggests ``weights_only=False``)."""
    text = str(error)
    for pattern in (
        r'Trying to load unsupported GLOBAL \S+',
        r'Unsupported global: GLOBAL \S+',
        r'Unsupported operand \d+',
        r'Trying to call reduce for \S+',
        r'Unsupported class \S+',
        r'invalid load key, [^.]*',
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(0)
    # the first sentence of the first line (torch's zip errors go on with
    # advice)
    first = text.strip().splitlines()[0] if text.strip() else ''
    return first.split('. ')[0][:200]


def _classify(
    file: FileLike, name: str, error: BaseException
) -> Optional[CheckpointError]:
    """Our error for an exception of a weights-only ``torch.load``; None
    for a RuntimeError that is not about the file's contents (e.g. CUDA
    tensors without CUDA)."""
    damaged_zip = r'PytorchStreamReader|zip archive|central directory'
    if isinstance(error, EOFError) or (
        isinstance(error, RuntimeError) and re.search(damaged_zip, str(error))
    ):
        return CorruptCheckpointError(
            name,
            f'checkpoint "{name}" is not a complete checkpoint (truncated or '
            f'damaged: {_reason(error) or type(error).__name__}); '
            f'{_NOT_LOADED}',
        )
    if isinstance(error, RuntimeError) and 'TorchScript' in str(error):
        return TorchScriptArchiveError(
            name,
            f'"{name}" is a TorchScript archive, not a checkpoint: read it '
            'with torch.jit.load (tools/model_converters/'
            f"open_clip_to_mmvfm.py does for OpenAI's .pt files); "
            f'{_NOT_LOADED}',
        )
    if not isinstance(error, pickle.UnpicklingError):
        return None
    reason = _reason(error)
    refused = _refused_globals(file)
    hostile = bool(refused) or (
        re.search(r'GLOBAL|reduce|Unsupported class', reason) is not None
        and not _is_damaged(file)
    )
    if hostile:
        named = re.findall(r'GLOBAL (\S+)', reason)
        what = ', '.join(refused or named) or reason
        return UnsafeCheckpointError(
            name,
            f'checkpoint "{name}" contains objects that could run code when '
            f'unpickled ({what}), so {_NOT_LOADED}. {_WHAT_IS_ALLOWED}. If '
            'this file is yours and you trust it, re-save its tensors '
            '(`torch.save(state_dict, ...)`) where it was made.',
        )
    return CorruptCheckpointError(
        name,
        f'"{name}" is not a checkpoint torch can read (random bytes, a '
        'truncated file, or a pickle that torch.save did not write'
        + (f': {reason}' if reason else '')
        + f'); {_NOT_LOADED}',
    )


def safe_load(
    file: FileLike,
    map_location: Any = None,
    *,
    allow_unsafe: bool = False,
    source: Optional[str] = None,
) -> Any:
    """``torch.load`` for files a user gives us, weights-only.

    Args:
        file: a path, or a binary file object (e.g. the bytes of a remote
            file in a ``BytesIO``).
        map_location: as :func:`torch.load`.
        allow_unsafe: full unpickling, for a file the user trusts that holds
            classes outside the allow-list. Warns. Never set it for a file
            from the internet.
        source: the name for messages (the URL a cached file came from).

    Returns:
        The loaded object (usually a dict with ``state_dict`` / ``meta``).

    Raises:
        FileNotFoundError / IsADirectoryError: naming the path.
        UnsafeCheckpointError: objects that could run code; not loaded.
        CorruptCheckpointError: empty, truncated, not a checkpoint.
        TorchScriptArchiveError: a TorchScript archive.
    """
    name = _name(file, source)
    if isinstance(file, (str, os.PathLike)):
        file = osp.expanduser(os.fspath(file))
        _check_path(file, name)
    if allow_unsafe:
        warnings.warn(
            f'loading "{name}" with full unpickling (allow_unsafe): the file '
            'can run any code. Do this only for a file you made or trust.',
            stacklevel=2,
        )
        return torch.load(file, map_location=map_location, weights_only=False)
    try:
        with warnings.catch_warnings():  # "looks like a TorchScript archive"
            warnings.filterwarnings('ignore', message='.*TorchScript')
            # a plain pickle of protocol > 2: refused below all the same
            warnings.filterwarnings('ignore', message='Detected pickle')
            return torch.load(
                file, map_location=map_location, weights_only=True
            )
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        ours = _classify(file, name, error)
        if ours is None:
            if hasattr(error, 'add_note'):  # Python >= 3.11
                error.add_note(f'while loading checkpoint "{name}"')
            raise
        raise ours from None


def safe_load_bytes(
    data: bytes, map_location: Any = None, *, source: str
) -> Any:
    """:func:`safe_load` of a file's bytes (remote backends)."""
    if not data:
        raise CorruptCheckpointError(
            source,
            f'checkpoint "{source}" is empty (0 bytes): not a checkpoint; '
            f'{_NOT_LOADED}',
        )
    return safe_load(io.BytesIO(data), map_location, source=source)
