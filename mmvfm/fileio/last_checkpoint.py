# Copyright (c) mmvfm contributors. All rights reserved.
"""``--resume`` without a path: the checkpoint ``last_checkpoint`` names.

mmengine's ``find_latest_checkpoint`` returns the file's text as it is, so
an empty ``last_checkpoint`` (a run killed while writing it) ends in
``FileNotFoundError:  can not be found.``, and one naming a deleted file
in an error that does not say where the name came from.
:func:`find_latest_checkpoint` says both.
"""

import glob
import os.path as osp
from typing import Optional

__all__ = ['find_latest_checkpoint']


def _checkpoints_in(work_dir: str) -> list:
    found = glob.glob(osp.join(work_dir, '*.pth'))
    return sorted(osp.basename(p) for p in found)


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The checkpoint that ``<path>/last_checkpoint`` names; None when that
    file does not exist (nothing to resume: training starts afresh).

    Raises:
        FileNotFoundError: ``last_checkpoint`` is empty, or names a local
            file that does not exist; the message lists the folder's
            checkpoints and how to go on.
    """
    from mmengine.logging import print_log

    save_file = osp.join(path, 'last_checkpoint')
    if not osp.exists(save_file):
        print_log('Did not find last_checkpoint to be resumed.')
        return None
    with open(save_file) as f:
        last_saved = f.read().strip()
    found = _checkpoints_in(path)
    hint = (
        f'checkpoints in "{path}": {found[-5:]}; resume one with '
        '`--resume PATH`'
        if found
        else f'no checkpoint in "{path}"'
    ) + f', or delete "{save_file}" to start afresh'
    if not last_saved:
        raise FileNotFoundError(
            f'"{save_file}" is empty (a run killed while writing it?), so '
            f'it names no checkpoint to resume from; {hint}'
        )
    if '://' not in last_saved and not osp.isfile(last_saved):
        raise FileNotFoundError(
            f'"{save_file}" names checkpoint "{last_saved}", which does '
            f'not exist; {hint}'
        )
    return last_saved
