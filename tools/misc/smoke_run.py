# Copyright (c) mmvfm contributors. All rights reserved.
"""One real training iteration of each config, on generated toy images.

python tools/misc/smoke_run.py CONFIG [CONFIG ...] [--scale 0.5]
    [--test] [--batch-size N] [--work-dir DIR] [--data-root DIR]
    [--cfg-options k=v ...]

Each config runs as written -- its pipelines and input size, model,
optimizer, hooks and train loop -- with toy images at the config's own data
paths and classes, no pretrained weights, an untrained teacher for a
distiller, validation off (``mmvfm.testing.smoke_run`` says exactly what
changes). ``tools/train.py`` trains the iteration; ``--test`` also saves a
checkpoint and evaluates it with ``tools/test.py``. A table of the
iteration's losses and wall times ends the run; the exit code is 1 if any
config failed or logged a loss that is not finite or above ``--bound``.

Every shipped config at its own scale (the COCO ones take minutes on a
2-core CPU)::

    python tools/misc/smoke_run.py configs/*/*.py projects/*/configs/*.py
"""

import argparse
import importlib.util
import json
import os
import os.path as osp
import sys
import time
import traceback

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from mmengine.config import DictAction  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.testing import (  # noqa: E402
    bad_losses,
    make_smoke_data,
    smoke_config,
    smoke_losses,
)
from mmvfm.utils import load_config  # noqa: E402


def load_tool(rel_path: str):
    """A script of tools/ as a module (tools/ is not a package)."""
    path = osp.join(REPO_ROOT, 'tools', rel_path)
    name = 'mmvfm_tool_' + rel_path.replace('/', '_')[:-3]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='One training iteration of each config on toy images'
    )
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--scale',
        type=float,
        default=1.0,
        help="factor on the pipelines' spatial sizes (default 1: the "
        "config's own input size)",
    )
    parser.add_argument(
        '--batch-size', type=int, help="images per iteration (the config's)"
    )
    parser.add_argument(
        '--test',
        action='store_true',
        help='save a checkpoint and evaluate it with tools/test.py',
    )
    parser.add_argument(
        '--work-dir',
        default='work_dirs/smoke',
        help='one folder per config under it (default work_dirs/smoke)',
    )
    parser.add_argument(
        '--data-root',
        help='the toy set to read, generated if missing (default: '
        'WORK_DIR/data)',
    )
    parser.add_argument(
        '--bound',
        type=float,
        default=1e3,
        help='largest accepted loss magnitude (default 1e3)',
    )
    parser.add_argument('--out', help='write the results as JSON')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of every config before the smoke changes',
    )
    return parser.parse_args(argv)


def smoke_one(
    config: str,
    data_root: str,
    work_dir: str,
    scale: float = 1.0,
    batch_size=None,
    test: bool = False,
    cfg_options=None,
) -> dict:
    """Train one config for one iteration (and test it).

    Returns:
        dict: ``losses`` (name -> float, and ``iters``), ``expected_iters``
        (1, or one per task of a multi-task loop), ``train_s``, and with
        ``test`` the ``metrics`` of tools/test.py and ``test_s``.
    """
    name = osp.splitext(osp.basename(config))[0]
    cfg = load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg = smoke_config(
        cfg,
        data_root,
        work_dir,
        scale=scale,
        batch_size=batch_size,
        checkpoint=test,
        name=f'smoke_{name}',
    )
    os.makedirs(work_dir, exist_ok=True)
    cfg_path = osp.join(work_dir, f'{name}.py')
    cfg.dump(cfg_path)
    start = time.perf_counter()
    runner = load_tool('train.py').main([cfg_path])
    result = dict(
        losses=smoke_losses(runner),
        expected_iters=cfg.train_cfg.get('max_iters', 1),
        train_s=time.perf_counter() - start,
    )
    if test:
        ckpt = osp.join(work_dir, 'last_checkpoint')
        with open(ckpt) as f:
            ckpt = f.read().strip()
        start = time.perf_counter()
        result['metrics'] = load_tool('test.py').main(
            [
                cfg_path,
                ckpt,
                '--work-dir',
                osp.join(work_dir, 'test'),
                '--cfg-options',
                f'experiment_name=smoke_test_{name}',
                f'visualizer.name=smoke_test_{name}',
            ]
        )
        result['test_s'] = time.perf_counter() - start
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    data_root = make_smoke_data(
        args.data_root or osp.join(args.work_dir, 'data')
    )
    rows, results, failed = [], {}, False
    for config in args.configs:
        name = osp.splitext(osp.basename(config))[0]
        try:
            result = smoke_one(
                config,
                data_root,
                osp.join(args.work_dir, name),
                scale=args.scale,
                batch_size=args.batch_size,
                test=args.test,
                cfg_options=args.cfg_options,
            )
        except Exception:  # report every config, fail at the end
            traceback.print_exc()
            results[config] = dict(error=traceback.format_exc(limit=3))
            rows.append(f'| {name} | FAILED | | | |')
            failed = True
            continue
        results[config] = result
        losses = result['losses']
        bad = bad_losses(losses, args.bound)
        failed |= bool(bad) or losses['iters'] != result['expected_iters']
        rows.append(
            f'| {name} | {losses["iters"]} | {result["train_s"]:.1f} | '
            f'{losses.get("loss", float("nan")):.4g} | '
            f'{", ".join(f"{k}={v:.3g}" for k, v in bad) or "-"} |'
        )
    print(f'\nsmoke runs (scale {args.scale}):')
    print('| config | iters | train s | loss | bad losses |')
    print('|---|---|---|---|---|')
    print('\n'.join(rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
