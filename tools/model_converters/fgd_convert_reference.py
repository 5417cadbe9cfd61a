# Copyright (c) mmvfm contributors. All rights reserved.
"""Convert a checkpoint saved by the FGD reference code (yzd-v/FGD, mmdet
2.x ``DetectionDistiller``) into an mmvfm ``SingleTeacherDistiller`` one.

The reference saves ``student.*``, ``teacher.*``, the loss weights as
``distill_losses.<loss_fgd_fpn_k>.*`` (same names and layout as
mmvfm's ``FGDLoss``) and the recorded feature maps as buffers named
``student_<module>`` / ``teacher_<module>``. The converter keeps the student
and the loss weights, drops the recorded maps, and drops the teacher
unless ``--keep-teacher`` (mmvfm loads the teacher from ``teacher_ckpt``).

    python tools/model_converters/fgd_convert_reference.py REF.pth OUT.pth
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import torch  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.fileio.cli import (  # noqa: E402
    add_unsafe_load_argument,
    load_or_exit,
)


def convert_state_dict(state_dict: dict, keep_teacher: bool = False) -> dict:
    """Map the reference's keys to mmvfm's (see module docstring).

    Raises:
        KeyError: when the input has no ``student.`` keys.
    """
    out, dropped = {}, []
    for key, value in state_dict.items():
        if key.startswith('module.'):  # saved from a DDP wrapper
            key = key[len('module.') :]
        if key.startswith(('student.', 'distill_losses.')):
            out[key] = value
        elif key.startswith('teacher.'):
            if keep_teacher:
                out[key] = value
        elif key.startswith(('student_', 'teacher_')):
            dropped.append(key)  # recorded feature maps, not weights
        else:
            raise KeyError(
                f'unexpected key {key!r} in a reference FGD checkpoint'
            )
    if not any(k.startswith('student.') for k in out):
        raise KeyError('no "student." keys: not a reference FGD checkpoint')
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_file', help='checkpoint of the reference code')
    parser.add_argument('out_file', help='mmvfm checkpoint to write')
    parser.add_argument('--keep-teacher', action='store_true')
    add_unsafe_load_argument(parser)
    args = parser.parse_args(argv)
    # mmcv 1.x checkpoints hold only tensors and plain meta: weights-only
    # loading works.
    ckpt = load_or_exit(args.in_file, args.unsafe_load)
    try:
        state = convert_state_dict(
            ckpt.get('state_dict', ckpt), args.keep_teacher
        )
    except KeyError as e:
        raise SystemExit(f'error: {e}') from None
    os.makedirs(osp.dirname(osp.abspath(args.out_file)), exist_ok=True)
    torch.save({'meta': {}, 'state_dict': state}, args.out_file)
    print(f'{len(state)} tensors written to {args.out_file}')


if __name__ == '__main__':
    main()
