# Copyright (c) mmvfm contributors. All rights reserved.
"""Print the full config (bases merged), e.g. to check overrides.

python tools/misc/print_config.py CONFIG [--cfg-options k=v ...]
    [--save-path full_config.py]
"""

import argparse
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmengine.config import DictAction  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.utils import load_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Print the whole config')
    parser.add_argument('config', help='config file path (or mmdet::...)')
    parser.add_argument('--save-path', help='also save the config there')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.depth=18',
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    print(f'Config:\n{cfg.pretty_text}')
    if args.save_path is not None:
        if not args.save_path.endswith(('.py', '.json', '.yaml', '.yml')):
            raise SystemExit(
                'error: --save-path must end with .py, .json, .yaml or .yml'
            )
        cfg.dump(args.save_path)
        print(f'Config saved to {args.save_path}')


if __name__ == '__main__':
    main()
