# Copyright (c) mmvfm contributors. All rights reserved.
"""Reading a user's annotation JSON with an error that names the file.

``json.load`` on a truncated file raises ``JSONDecodeError: ... line 1
column 30743`` from inside pycocotools, with no file named; on an empty one
``Expecting value: line 1 column 1``. :func:`json_error` turns either into
a ``ValueError`` that names the file, says it is not valid JSON and where
it broke (against the file's size, so a truncation is recognisable).
"""

import json
import os.path as osp
from typing import Any

__all__ = ['json_error', 'load_json']


def json_error(path: str, error: json.JSONDecodeError) -> ValueError:
    """The error to raise for ``error``, met while reading ``path``.

    Args:
        path (str): the file that was read (named in the message; its size
            is looked up when it is a local file).
        error (json.JSONDecodeError): what ``json.load`` raised.

    Returns:
        ValueError: ``annotation file "<path>" is empty (0 bytes)`` or
        ``... is not valid JSON: <msg> at line L column C (character P of
        N; a B-byte file)``, ending in ``truncated?`` when it breaks at the
        end of the text or the text does not end in ``}`` / ``]``.
    """
    try:
        size = osp.getsize(path)
    except (OSError, TypeError):
        size = None
    text = error.doc if isinstance(error.doc, str) else ''
    if size == 0 or not text.strip():
        what = '0 bytes' if size == 0 else 'only white space'
        return ValueError(
            f'annotation file "{path}" is empty ({what}): not valid JSON '
            '(an interrupted download or write?)'
        )
    where = (
        f'line {error.lineno} column {error.colno} (character {error.pos} '
        f'of {len(text)}' + (f'; a {size}-byte file' if size else '') + ')'
    )
    # a cut can break the last token anywhere (an unterminated string is
    # reported where it starts): an unclosed document is the tell
    end = text.rstrip()
    truncated = error.pos >= len(end) or not end.endswith(('}', ']'))
    return ValueError(
        f'annotation file "{path}" is not valid JSON: {error.msg} at {where}'
        + (
            '; the JSON is not closed at the end of the file: truncated?'
            if truncated
            else ''
        )
    )


def load_json(path: str) -> Any:
    """``json.load`` of ``path``, JSON only (``mmengine.load`` would
    unpickle a ``.pkl`` path, which can run code).

    Raises:
        FileNotFoundError: naming the path.
        ValueError: not a ``.json`` file, or not valid JSON (naming the file
            and where it broke).
    """
    if not str(path).endswith('.json'):
        raise ValueError(
            f'annotation file "{path}" must be a .json file (mmvfm reads '
            'annotations as JSON only; a pickle could run code)'
        )
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file "{path}" does not exist')
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise json_error(path, e) from None
