# Copyright (c) mmvfm contributors. All rights reserved.
"""The checkpoint option and loading of command-line tools."""

import argparse
from typing import Any

from .safe_load import CheckpointError, safe_load

__all__ = ['add_unsafe_load_argument', 'load_or_exit']

UNSAFE_LOAD_HELP = (
    'load the input with full unpickling (default: weights-only). The file '
    'can then run any code: use it only for a file you made or trust that '
    'holds classes outside the allow-list (e.g. a training checkpoint of '
    'another codebase that pickled its argparse.Namespace args). Warns.'
)


def add_unsafe_load_argument(parser: argparse.ArgumentParser) -> None:
    """``--unsafe-load``: the explicit opt-in to full unpickling."""
    parser.add_argument(
        '--unsafe-load', action='store_true', help=UNSAFE_LOAD_HELP
    )


def load_or_exit(path: str, allow_unsafe: bool = False) -> Any:
    """:func:`safe_load` to the CPU; a refused, broken or missing file ends
    the tool with ``error: <message naming the file>``."""
    try:
        return safe_load(path, 'cpu', allow_unsafe=allow_unsafe)
    except (CheckpointError, OSError) as e:
        raise SystemExit(f'error: {e}') from None
