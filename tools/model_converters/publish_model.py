# Copyright (c) mmvfm contributors. All rights reserved.
"""Strip a training checkpoint for release and add its hash to the name.

Keeps ``state_dict`` and ``meta`` (without the message hub and the config
history), drops the optimizer and scheduler states, and saves
``<out stem>-<first 8 hex of sha256>.pth``.

    python tools/model_converters/publish_model.py IN.pth OUT.pth
"""

import argparse
import hashlib
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

KEEP_META = (
    'mmdet_version',
    'mmengine_version',
    'dataset_meta',
    'experiment_name',
    'epoch',
    'iter',
    'seed',
    'time',
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Process a checkpoint to be published'
    )
    parser.add_argument('in_file', help='input checkpoint filename')
    parser.add_argument('out_file', help='output checkpoint filename')
    parser.add_argument(
        '--save-keys',
        nargs='+',
        type=str,
        default=['meta', 'state_dict'],
        help='top-level keys to keep',
    )
    add_unsafe_load_argument(parser)
    return parser.parse_args(argv)


def process_checkpoint(
    in_file: str,
    out_file: str,
    save_keys=('meta', 'state_dict'),
    allow_unsafe: bool = False,
) -> str:
    """Strip ``in_file`` and save it as ``<out_file stem>-<sha8>.pth``.

    Returns:
        str: the final file name.
    """
    if not osp.isfile(in_file):
        raise FileNotFoundError(f'checkpoint "{in_file}" does not exist')
    checkpoint = safe_load(in_file, 'cpu', allow_unsafe=allow_unsafe)
    if 'state_dict' not in checkpoint:
        raise KeyError(
            f'"{in_file}" has no "state_dict": not an mmengine checkpoint'
        )
    out = {k: checkpoint[k] for k in save_keys if k in checkpoint}
    if 'meta' in out:
        out['meta'] = {k: v for k, v in out['meta'].items() if k in KEEP_META}
    if not out_file.endswith('.pth'):
        raise ValueError(f'out_file "{out_file}" must end with .pth')
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    torch.save(out, out_file)
    with open(out_file, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    final_file = out_file[: -len('.pth')] + f'-{sha[:8]}.pth'
    os.replace(out_file, final_file)
    return final_file


def main(argv=None):
    args = parse_args(argv)
    try:
        final_file = process_checkpoint(
            args.in_file, args.out_file, args.save_keys, args.unsafe_load
        )
    except (CheckpointError, OSError) as e:
        raise SystemExit(f'error: {e}') from None
    print(f'The published model is saved at {final_file}.')


if __name__ == '__main__':
    main()
