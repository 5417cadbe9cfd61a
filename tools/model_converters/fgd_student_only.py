# Copyright (c) mmvfm contributors. All rights reserved.
"""Export the student of a distillation checkpoint as a plain detector.

The output loads into the student's own mmdet config (e.g.
``mmdet::retinanet/retinanet_r50_fpn_2x_coco.py``) with mmdet's or
mmvfm's ``tools/test.py``; teacher, distillation-loss weights and optimizer
state are dropped.

    python tools/model_converters/fgd_student_only.py IN.pth OUT.pth
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import torch  # noqa: E402

import mmvfm  # noqa: E402,F401  (weights-only loading of mmengine classes)
from mmvfm.fileio import CheckpointError, safe_load  # noqa: E402
from mmvfm.fileio.cli import add_unsafe_load_argument  # noqa: E402

PREFIX = 'student.'


def student_state_dict(state_dict: dict) -> dict:
    """``student.*`` keys without the prefix; KeyError if there are none."""
    student = {
        k[len(PREFIX) :]: v
        for k, v in state_dict.items()
        if k.startswith(PREFIX)
    }
    if not student:
        raise KeyError(
            'no "student." keys: not a checkpoint of a distiller (its keys '
            f'start with {sorted({k.split(".")[0] for k in state_dict})})'
        )
    return student


def convert(in_file: str, out_file: str, allow_unsafe: bool = False) -> dict:
    """Write the student-only checkpoint; return its state dict."""
    if not osp.isfile(in_file):
        raise FileNotFoundError(f'checkpoint "{in_file}" does not exist')
    ckpt = safe_load(in_file, 'cpu', allow_unsafe=allow_unsafe)
    state = student_state_dict(ckpt.get('state_dict', ckpt))
    meta = {
        k: v
        for k, v in ckpt.get('meta', {}).items()
        if k in ('dataset_meta', 'mmdet_version', 'epoch', 'iter')
    }
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': state}, out_file)
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_file', help='checkpoint of a distiller')
    parser.add_argument('out_file', help='student-only checkpoint to write')
    add_unsafe_load_argument(parser)
    args = parser.parse_args(argv)
    try:
        state = convert(args.in_file, args.out_file, args.unsafe_load)
    except (OSError, KeyError, CheckpointError) as e:
        raise SystemExit(f'error: {e}') from None
    print(f'{len(state)} student tensors written to {args.out_file}')


if __name__ == '__main__':
    main()
