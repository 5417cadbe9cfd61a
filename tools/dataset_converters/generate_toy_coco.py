# Copyright (c) mmvfm contributors. All rights reserved.
"""Generate the deterministic toy COCO dataset of mmvfm.

Example::

    python tools/dataset_converters/generate_toy_coco.py data/toy_coco
    python tools/dataset_converters/generate_toy_coco.py /tmp/toy \\
        --num-train 100 --num-val 20 --img-size 64 96 --overwrite
    # the out-of-domain set: new colours, backgrounds and object styles
    python tools/dataset_converters/generate_toy_coco.py data/toy_coco_ood \\
        --domain ood
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmvfm.datasets.toy_coco import (  # noqa: E402
    TOY_DOMAINS,
    generate_toy_coco,
    verify_toy_coco,
)


def _pair(values: List[float], name: str) -> object:
    """One value stays a scalar, two become a (min, max) tuple."""
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return tuple(values)
    raise SystemExit(f'{name} takes one or two values, got {values}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Generate the toy COCO dataset (coloured shapes on a '
        'textured background) with instances, captions, classification '
        'and multi-label annotations.'
    )
    parser.add_argument(
        'out_dir',
        nargs='?',
        default='data/toy_coco',
        help='output folder (default: data/toy_coco)',
    )
    parser.add_argument('--num-train', type=int, default=2000)
    parser.add_argument('--num-val', type=int, default=200)
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=[112, 128],
        metavar='N',
        help='MIN MAX of the image width/height, or one fixed size',
    )
    parser.add_argument(
        '--num-objects',
        type=int,
        nargs='+',
        default=[1, 4],
        metavar='N',
        help='MIN MAX objects per image, or one fixed number',
    )
    parser.add_argument(
        '--obj-size',
        type=float,
        nargs='+',
        default=[0.125, 0.5],
        metavar='F',
        help='MIN MAX object side relative to the shorter image side',
    )
    parser.add_argument('--num-captions', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--domain',
        choices=TOY_DOMAINS,
        default='in',
        help='in: the usual set; ood: the same classes and formats in '
        'colours, backgrounds and object styles the in-domain set never '
        'uses (default: in)',
    )
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace an existing set in out_dir',
    )
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar'
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Generate, verify and summarise the set."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        result = generate_toy_coco(
            args.out_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            img_size=_pair(args.img_size, '--img-size'),
            num_objects=_pair(args.num_objects, '--num-objects'),
            obj_size=_pair(args.obj_size, '--obj-size'),
            num_captions=args.num_captions,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            domain=args.domain,
        )
    except (ValueError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    verify_toy_coco(args.out_dir)
    name = 'toy COCO' if args.domain == 'in' else 'out-of-domain toy COCO'
    print(
        f'{name} written to {result["out_dir"]} in {elapsed:.1f} s (verified)'
    )
    for split in ('train', 'val'):
        info = result[split]
        print(
            f'  {split}: {info["num_images"]} images, '
            f'{info["num_annotations"]} objects, '
            f'{info["num_captions"]} captions -> {info["img_dir"]}'
        )
        for kind in ('instances', 'captions', 'classification', 'multilabel'):
            print(f'    {info[kind]}')
    print(f'  classes: {result["classes_file"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
