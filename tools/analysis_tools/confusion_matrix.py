# Copyright (c) mmvfm contributors. All rights reserved.
"""The confusion matrix of a test run's detections (classes + background).

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/confusion_matrix.py CONFIG results.pkl \
        SAVE_DIR [--score-thr 0.3] [--tp-iou-thr 0.5]

writes ``SAVE_DIR/confusion_matrix.png`` (rows: ground truth, columns:
prediction, each row normalised to 100 %) and ``confusion_matrix.csv``
(the counts). mmdet's ``calculate_confusion_matrix`` and
``plot_confusion_matrix``; the results pickle is read without running code
(``mmvfm.fileio.safe_load_results``; mmdet unpickles it fully).
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402
from analyze_results import (  # noqa: E402  (imports mmvfm first)
    check_lengths,
    load_mmdet_tool,
    load_results_or_exit,
    load_test_config,
)
from mmengine.config import DictAction  # noqa: E402

mmdet_tool = load_mmdet_tool('confusion_matrix.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Confusion matrix of test detections'
    )
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'prediction_path', help='the .pkl of tools/test.py --out'
    )
    parser.add_argument('save_dir', help='write the matrix here')
    parser.add_argument('--show', action='store_true', help='show the matrix')
    parser.add_argument(
        '--color-theme', default='plasma', help='matplotlib colour map'
    )
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='count detections scoring at least this',
    )
    parser.add_argument(
        '--tp-iou-thr',
        type=float,
        default=0.5,
        help='IoU at which a detection matches a ground-truth box',
    )
    parser.add_argument(
        '--nms-iou-thr',
        type=float,
        default=None,
        help='run NMS again at this IoU per class (default: as predicted)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings',
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the counts, ``[num_classes + 1, num_classes + 1]`` (the last
    row / column: background, i.e. missed ground truth / false
    detections)."""
    from mmdet.registry import DATASETS

    args = parse_args(argv)
    results = load_results_or_exit(args.prediction_path)
    if 'pred_instances' not in results[0]:
        raise SystemExit(
            f'error: results file "{args.prediction_path}" has no '
            "'pred_instances' (not detections)"
        )
    cfg = load_test_config(args.config, args.cfg_options)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    check_lengths(dataset, results, args.prediction_path)
    os.makedirs(args.save_dir, exist_ok=True)
    matrix = mmdet_tool.calculate_confusion_matrix(
        dataset, results, args.score_thr, args.nms_iou_thr, args.tp_iou_thr
    )
    labels = (*dataset.metainfo['classes'], 'background')
    if not args.show:
        import matplotlib

        matplotlib.use('Agg')
    mmdet_tool.plot_confusion_matrix(
        matrix,
        labels,
        save_dir=args.save_dir,
        show=args.show,
        color_theme=args.color_theme,
    )
    csv = osp.join(args.save_dir, 'confusion_matrix.csv')
    np.savetxt(
        csv,
        matrix,
        fmt='%d',
        delimiter=',',
        header='ground truth (rows) x prediction (columns): '
        + ','.join(labels),
    )
    png = osp.join(args.save_dir, 'confusion_matrix.png')
    print(f'\nconfusion matrix ({len(labels)} x {len(labels)}): {png}, {csv}')
    return matrix


if __name__ == '__main__':
    main()
