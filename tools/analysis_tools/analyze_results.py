# Copyright (c) mmvfm contributors. All rights reserved.
"""Rank a test run's images by their mAP; draw the best and the worst.

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/analyze_results.py CONFIG results.pkl \
        SHOW_DIR [--topk 20] [--show-score-thr 0.3]

writes ``SHOW_DIR/good/`` and ``SHOW_DIR/bad/`` (``<image>_<mAP>.png``,
the predictions drawn). mmdet's tool (its ``ResultVisualizer`` ranks and
draws) with two changes:

- the results pickle is read without running code
  (:func:`mmvfm.fileio.safe_load_results`); mmdet unpickles it fully;
- an image's mAP is computed in this process; mmdet starts a pool of four
  processes for every image.
"""

import argparse
import os.path as osp
import sys
from types import SimpleNamespace

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402
from mmdet_tools import load_mmdet_tool  # noqa: E402,F401  (re-exported)
from mmengine.config import DictAction  # noqa: E402

import mmvfm  # noqa: E402,F401  (stack fixes, registries)
from mmvfm.datasets import prepare_toy_data  # noqa: E402
from mmvfm.fileio import CheckpointError, safe_load_results  # noqa: E402
from mmvfm.utils import (  # noqa: E402
    check_data_paths,
    load_config,
    register_all_modules,
)

mmdet_tool = load_mmdet_tool('analyze_results.py')


def load_results_or_exit(path: str) -> list:
    """:func:`mmvfm.fileio.safe_load_results`; a refused, broken or
    missing file ends the tool with ``error: <message naming the file>``."""
    try:
        return safe_load_results(path)
    except (CheckpointError, OSError) as e:
        raise SystemExit(f'error: {e}') from None


def load_test_config(path: str, cfg_options=None, loader='test_dataloader'):
    """The config, with ``--cfg-options``, mmdet's ``${...}`` values and
    ``MMDET_DATASETS`` applied, and the dataset of ``loader`` present (an
    absent toy set generated first); mmdet's and mmvfm's modules
    registered."""
    from mmdet.utils import replace_cfg_vals, update_data_root

    try:
        cfg = load_config(path)
        cfg = replace_cfg_vals(cfg)
        update_data_root(cfg)
        if cfg_options is not None:
            cfg.merge_from_dict(cfg_options)
        if 'dataset' not in (cfg.get(loader) or {}):
            raise ValueError(
                f'config "{path}" has no {loader}.dataset (a multi-task '
                'config? analyze one task with a config of its own)'
            )
        prepare_toy_data(cfg, [loader])
        check_data_paths(cfg, [loader])
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None
    register_all_modules(init_default_scope=True)
    return cfg


def check_lengths(dataset, results: list, path: str) -> None:
    if len(dataset) != len(results):
        raise SystemExit(
            f'error: results file "{path}" has {len(results)} images, the '
            f'test set {len(dataset)}: not the predictions of this config '
            '(or of other --cfg-options)'
        )


def bbox_map_eval(det_result, annotation) -> float:
    """mmdet's ``bbox_map_eval`` (one image's mAP@[.5:.95]) without a
    process pool: ``eval_map`` of one image needs none."""
    from mmdet.evaluation import eval_map

    iou_thrs = np.linspace(0.5, 0.95, 10)
    aps = [
        eval_map([det_result], [annotation], iou_thr=thr, logger='silent')[0]
        for thr in iou_thrs
    ]
    return sum(aps) / len(aps)


class ResultVisualizer(mmdet_tool.ResultVisualizer):
    """mmdet's, ranking detections with :func:`bbox_map_eval`; keeps the
    ranking: ``ranked = (good, bad)``, ``[(dataset index, mAP), ...]``
    each."""

    ranked = ([], [])

    def detection_evaluate(self, dataset, results, topk=20, eval_fn=None):
        self.ranked = super().detection_evaluate(
            dataset, results, topk, eval_fn or bbox_map_eval
        )
        return self.ranked

    def panoptic_evaluate(self, dataset, results, topk=20):
        self.ranked = super().panoptic_evaluate(dataset, results, topk)
        return self.ranked


def loading_pipeline(cfg) -> list:
    """The loading steps (image, annotations) of the training pipeline, as
    mmdet's tool takes them (from the innermost dataset of a wrapper)."""
    from mmdet.datasets import get_loading_pipeline

    ds = cfg.train_dataloader.dataset
    # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset (whose own
    # pipeline mixes images), ConcatDataset
    while 'dataset' in ds or 'datasets' in ds:
        ds = ds['dataset'] if 'dataset' in ds else ds['datasets'][0]
    return get_loading_pipeline(ds.pipeline)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-image mAP of test predictions; draw the best and '
        'the worst images'
    )
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'prediction_path', help='the .pkl of tools/test.py --out'
    )
    parser.add_argument('show_dir', help='write good/ and bad/ images here')
    parser.add_argument('--show', action='store_true', help='show images')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=0,
        help='the interval of show (s), 0 is block',
    )
    parser.add_argument(
        '--topk',
        default=20,
        type=int,
        help='draw this many best and worst images (at most half the set '
        'each)',
    )
    parser.add_argument(
        '--show-score-thr',
        type=float,
        default=0,
        help='draw predictions scoring at least this',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings',
    )
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error('--topk must be at least 1')
    return args


def main(argv=None):
    """Returns ``(good, bad)``: ``[(dataset index, mAP), ...]`` each."""
    from mmdet.registry import DATASETS

    args = parse_args(argv)
    results = load_results_or_exit(args.prediction_path)
    if not {'pred_instances', 'pred_panoptic_seg'} & set(results[0]):
        raise SystemExit(
            f'error: results file "{args.prediction_path}" has neither '
            "'pred_instances' nor 'pred_panoptic_seg'"
        )
    cfg = load_test_config(args.config, args.cfg_options)
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.test_mode = True
    ds_cfg.pipeline = loading_pipeline(cfg)
    dataset = DATASETS.build(ds_cfg)
    check_lengths(dataset, results, args.prediction_path)
    if 'pred_panoptic_seg' in results[0]:
        # panoptic quality needs the config's evaluator: mmdet's Runner
        from mmengine.runner import Runner

        cfg.work_dir = args.show_dir
        runner = Runner.from_cfg(cfg)
    else:  # detections are ranked by bbox_map_eval alone
        runner = SimpleNamespace(test_evaluator=None)
    visualizer = ResultVisualizer(
        args.show, args.wait_time, args.show_score_thr, runner
    )
    visualizer.evaluate_and_show(
        dataset, results, topk=args.topk, show_dir=args.show_dir
    )
    good, bad = visualizer.ranked
    print(
        f'\nbest {len(good)} and worst {len(bad)} images by mAP drawn to '
        f'{args.show_dir}/{{good,bad}}'
    )
    return good, bad


if __name__ == '__main__':
    main()
