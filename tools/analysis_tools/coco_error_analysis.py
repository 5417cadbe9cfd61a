# Copyright (c) mmvfm contributors. All rights reserved.
"""COCO error analysis: where the precision of a results file is lost
(localisation, confusion with similar / other classes, background, missed),
overall and per class, as PR-curve plots (Hoiem et al.'s breakdown).

    python tools/test.py CONFIG CKPT \
        --cfg-options test_evaluator.outfile_prefix=work_dirs/res
    python tools/analysis_tools/coco_error_analysis.py \
        work_dirs/res.bbox.json OUT_DIR \
        --ann data/toy_coco/annotations/instances_val.json \
        [--extraplots] [--areas 1024 9216 10000000000]

writes ``OUT_DIR/bbox/bbox-<class or allclass>-<area>.png``. mmdet's
``analyze_results`` of its ``coco_error_analysis.py`` (pycocotools only:
none of mmvfm's stack fixes is needed), with its per-class process pool
(48 processes) capped at the number of classes and CPU cores, and the
inputs checked first.
"""

import argparse
import json
import os
import os.path as osp
import sys
from multiprocessing import Pool

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmdet_tools import load_mmdet_tool  # noqa: E402


def check_inputs(result: str, ann: str) -> int:
    """The number of classes of ``ann``, after checking that both files
    exist and are JSON (never a pickle)."""
    for what, path in (('result', result), ('--ann', ann)):
        if not osp.isfile(path):
            raise SystemExit(f'error: {what} file "{path}" does not exist')
        if not path.endswith('.json'):
            raise SystemExit(
                f'error: {what} file "{path}" must be a .json file (the '
                'results: tools/test.py --cfg-options '
                'test_evaluator.outfile_prefix=PREFIX writes PREFIX.bbox.json)'
            )
    with open(ann, encoding='utf-8') as f:
        try:
            num_classes = len(json.load(f)['categories'])
        except (ValueError, KeyError) as e:
            raise SystemExit(
                f'error: --ann file "{ann}" is not a COCO annotation file '
                f'({e})'
            ) from None
    return num_classes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='COCO Error Analysis Tool')
    parser.add_argument(
        'result', help='results file (COCO json, e.g. PREFIX.bbox.json)'
    )
    parser.add_argument('out_dir', help='write the plots here')
    parser.add_argument(
        '--ann',
        default='data/coco/annotations/instances_val2017.json',
        help='the annotation file the results are of',
    )
    parser.add_argument(
        '--types',
        type=str,
        nargs='+',
        default=['bbox'],
        choices=['bbox', 'segm'],
        help='result types',
    )
    parser.add_argument(
        '--extraplots',
        action='store_true',
        help='also per-class bar plots and ground-truth area statistics',
    )
    parser.add_argument(
        '--score-thr',
        type=float,
        default=None,
        help='drop detections scoring below this first',
    )
    parser.add_argument(
        '--areas',
        type=int,
        nargs=3,
        default=[1024, 9216, 10000000000],
        help='upper bounds of the small, medium and large area ranges',
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the written plot files."""
    args = parse_args(argv)
    num_classes = check_inputs(args.result, args.ann)
    tool = load_mmdet_tool('coco_error_analysis.py')
    workers = max(1, min(num_classes, os.cpu_count() or 1))

    def pool(processes=None, *rest, **kwargs):
        # NOTE: mmdet asks for 48 processes whatever the machine
        return Pool(workers, *rest, **kwargs)

    tool.Pool = pool
    tool.analyze_results(
        args.result,
        args.ann,
        args.types,
        args.out_dir,
        extraplots=args.extraplots,
        areas=args.areas,
        score_thr=args.score_thr,
    )
    written = sorted(
        osp.join(root, name)
        for res_type in args.types
        for root, _, names in os.walk(osp.join(args.out_dir, res_type))
        for name in names
        if name.endswith('.png')
    )
    print(f'{len(written)} plots written to {args.out_dir}')
    return written


if __name__ == '__main__':
    main()
