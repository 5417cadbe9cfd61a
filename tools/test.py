# Copyright (c) mmvfm contributors. All rights reserved.
"""Evaluate a checkpoint (COCO mAP via pycocotools for COCO configs).

python tools/test.py CONFIG CHECKPOINT [--out results.pkl]
    [--show-dir DIR] [--work-dir DIR] [--cfg-options ...]
bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]

A multi-task config (``MultiTaskTestLoop``) reports every task's metrics
prefixed by the task and ``--out`` writes one file per task
(``results.<task>.pkl``).
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvfm  # noqa: E402,F401  (stack fixes, registries)
from mmvfm.datasets.annotation_check import AnnotationError  # noqa: E402
from mmvfm.fileio import CheckpointError  # noqa: E402
from mmvfm.utils import (  # noqa: E402
    check_data_paths,
    destroy_process_group,
    load_run_config,
    register_all_modules,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics'
    )
    parser.add_argument(
        '--out',
        type=str,
        help='dump the predictions to a pickle file (.pkl/.pickle)',
    )
    parser.add_argument(
        '--show', action='store_true', help='show prediction results'
    )
    parser.add_argument(
        '--show-dir',
        help='directory where painted images are saved (relative to the '
        "run's timestamped folder in the work dir unless absolute)",
    )
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=4',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, args) -> None:
    """Switch the config's visualization hook on for --show(-dir):
    ``DetVisualizationHook`` or, for a multi-task config,
    ``MultiTaskVisualizationHook``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise SystemExit(
            'error: --show/--show-dir need '
            '`default_hooks.visualization` in the config'
        )
    hook_type = str(hook.get('type', '')).split('.')[-1]
    if (
        is_multi_task_evaluator(cfg.get('test_evaluator'))
        and hook_type != 'MultiTaskVisualizationHook'
    ):
        raise SystemExit(
            'error: --show/--show-dir on a multi-task config need '
            '`default_hooks.visualization = dict(type='
            "'MultiTaskVisualizationHook', task_hooks=dict(<task>=dict("
            "type='DetVisualizationHook'), ...))`; the config has "
            f"{hook_type!r}, which would draw every task's samples as "
            'detections'
        )
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        hook['test_out_dir'] = args.show_dir


def build_test_cfg(args):
    """Load the config and apply the command-line options to it."""
    cfg = load_run_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    if not osp.isfile(args.checkpoint):
        raise SystemExit(
            f'error: checkpoint "{args.checkpoint}" does not exist'
        )
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('error: --out must be a .pkl or .pickle file')
        evaluators = cfg.test_evaluator
        if is_multi_task_evaluator(evaluators):
            # one file per task: results.pkl -> results.<task>.pkl
            stem, ext = osp.splitext(args.out)
            for task, task_evaluators in evaluators.items():
                evaluators[task] = with_dump(
                    task_evaluators, f'{stem}.{task}{ext}'
                )
        else:
            cfg.test_evaluator = with_dump(evaluators, args.out)
    return cfg


def is_multi_task_evaluator(evaluators) -> bool:
    """``dict(task=evaluator, ...)`` of a multi-task test loop."""
    return (
        isinstance(evaluators, dict)
        and 'type' not in evaluators
        and all(isinstance(v, (dict, list)) for v in evaluators.values())
    )


def with_dump(evaluators, out_file: str) -> list:
    """The evaluator list plus a metric that pickles the predictions:
    mmdet's ``DumpDetResults`` next to a COCO metric, mmengine's
    ``DumpResults`` otherwise."""
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    evaluators = list(evaluators)
    is_det = any(
        str(e.get('type', '')).split('.')[-1] == 'CocoMetric'
        for e in evaluators
    )
    dump = 'DumpDetResults' if is_det else 'mmengine.DumpResults'
    return evaluators + [dict(type=dump, out_file_path=out_file)]


def main(argv=None):
    args = parse_args(argv)
    cfg = build_test_cfg(args)
    register_all_modules(init_default_scope=False)
    try:
        check_data_paths(cfg, ['test_dataloader'])
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    try:  # a refused or broken checkpoint (the one tested, a teacher's),
        # annotations that would evaluate wrong
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        metrics = runner.test()
    except (CheckpointError, AnnotationError) as e:
        raise SystemExit(f'error: {e}') from None
    destroy_process_group()
    return metrics


if __name__ == '__main__':
    main()
