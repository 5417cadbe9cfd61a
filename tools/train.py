# Copyright (c) mmvfm contributors. All rights reserved.
"""Train a detector with mmengine's Runner (mmdet's train.py interface).

Works on mmvfm configs and on stock mmdet configs (``mmdet::...`` paths
too). Single process::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]

Distributed (torchrun; gloo on CPU, nccl on GPU)::

    bash tools/dist_train.sh CONFIG NUM_PROCS [options]
"""

import argparse
import os
import os.path as osp
import sys

# Make the repository importable (``projects.*`` in custom_imports) when
# this script is run from a checkout.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmvfm  # noqa: E402,F401  (stack fixes, registries)
from mmvfm.datasets import prepare_toy_data  # noqa: E402
from mmvfm.datasets.annotation_check import AnnotationError  # noqa: E402
from mmvfm.fileio import CheckpointError, find_latest_checkpoint  # noqa: E402
from mmvfm.utils import (  # noqa: E402
    check_checkpoint_paths,
    check_data_paths,
    destroy_process_group,
    load_run_config,
    register_all_modules,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision training (needs CUDA)',
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size '
        'relative to `auto_scale_lr.base_batch_size` of the config',
    )
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest '
        'checkpoint in the work dir when no path is given',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. '
        'train_dataloader.batch_size=4 model.backbone.depth=18',
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


def build_train_cfg(args):
    """Load the config and apply the command-line options to it."""
    cfg = load_run_config(
        args.config, args.cfg_options, args.work_dir, args.launcher
    )
    if args.amp:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                'error: --amp needs a CUDA device (mmengine '
                'has no mixed-precision optimizer wrapper for '
                'the CPU)'
            )
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit(
                'error: --auto-scale-lr needs '
                '`auto_scale_lr.base_batch_size` in the config'
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
        try:  # an empty or stale last_checkpoint, before anything is built
            find_latest_checkpoint(cfg.work_dir)
        except FileNotFoundError as e:
            raise SystemExit(f'error: --resume: {e}') from None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(
                f'error: --resume checkpoint "{args.resume}" does not exist'
            )
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None):
    """Returns the Runner after training (its message hub holds the last
    iteration's losses)."""
    args = parse_args(argv)
    cfg = build_train_cfg(args)
    register_all_modules(init_default_scope=False)
    loaders = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    try:
        # another run's checkpoint (a toy teacher, a ViSFT stage): the
        # command that writes it, before anything is generated
        check_checkpoint_paths(cfg)
        # a toy set whose folder is absent is generated on first use
        prepare_toy_data(cfg, loaders)
        check_data_paths(cfg, loaders)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None
    try:  # a refused or broken checkpoint of a teacher (at build),
        # load_from, --resume or a Pretrained init (in train); annotations
        # that would train wrong (when the dataloaders are built)
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        runner.train()
    except (CheckpointError, AnnotationError) as e:
        raise SystemExit(f'error: {e}') from None
    destroy_process_group()
    return runner


if __name__ == '__main__':
    main()
