# Copyright (c) mmvfm contributors. All rights reserved.
"""The losses of a config's first iterations, from a saved initial state.

python tools/misc/multitask_loss_trace.py CONFIG [--iters 20] [--seed 0]
    [--save-init PATH | --init PATH] [--out JSON] [--compare JSON]
    [--rtol 1e-6] [--work-dir DIR] [--cfg-options k=v ...]

A refactor that should change nothing is checked by running this before
and after it from the same weights: the config trains through mmengine's
Runner as written (its loop, task draws, optimizer, schedules, hooks) with
what would make two runs differ removed:

- the toy set and its tokenizer generated when absent (as
  ``tools/train.py``); one intra-op thread, no data workers, validation
  and checkpoints off;
- the weights: after the Runner has built and initialised the model
  (``before_train``), ``--save-init`` writes its ``state_dict``, or
  ``--init`` loads one (strictly: a key that moved is an error);
- the randomness: then every generator (Python, NumPy, torch) is seeded
  with ``--seed``, so the iterations draw the same numbers however the
  model's construction consumed them;
- the schedule: training stops after ``--iters`` iterations
  (``stop_training``), the config's ``max_iters`` and so its learning-rate
  schedule unchanged.

The JSON (``--out``; printed otherwise) lists, per iteration, the task of
the batch and every logged value of ``train_step`` (the losses, their sum
``loss``, and e.g. ``logit_scale``). ``--compare`` reads an earlier JSON
and exits 1 unless the same iterations logged the same keys and every value
agrees to ``--rtol`` (relative; absolute 1e-12 for values near 0).
"""

import argparse
import json
import os
import os.path as osp
import sys
import tempfile

os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.runner import Runner, set_random_seed  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.datasets import prepare_toy_data  # noqa: E402
from mmvfm.fileio import safe_load  # noqa: E402
from mmvfm.utils import load_config  # noqa: E402


class LossTraceHook(Hook):
    """Saves / loads the initial weights and reseeds at ``before_train``;
    records every iteration's logged values; stops after ``iters``."""

    priority = 'VERY_HIGH'

    def __init__(self, iters, seed, init=None, save_init=None) -> None:
        self.iters = iters
        self.seed = seed
        self.init = init
        self.save_init = save_init
        self.records = []

    def before_train(self, runner) -> None:
        model = (
            runner.model.module
            if is_model_wrapper(runner.model)
            else runner.model
        )
        if self.init:
            state = safe_load(self.init, map_location='cpu')
            model.load_state_dict(state, strict=True)
        if self.save_init:
            os.makedirs(
                osp.dirname(osp.abspath(self.save_init)), exist_ok=True
            )
            torch.save(model.state_dict(), self.save_init)
        set_random_seed(self.seed)

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        values = {
            k: float(v.detach().double()) if torch.is_tensor(v) else float(v)
            for k, v in (outputs or {}).items()
        }
        task = data_batch.get('task') if isinstance(data_batch, dict) else None
        self.records.append(dict(iter=batch_idx, task=task, values=values))
        if len(self.records) >= self.iters:
            runner.train_loop.stop_training = True


def trace_config(cfg, work_dir: str):
    """``cfg`` as a deterministic CPU run: no workers, no validation, no
    checkpoints, no visualizer backends but the local one."""
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.load_from = None
    cfg.resume = False
    for split in ('train', 'val', 'test'):
        loaders = cfg.get(f'{split}_dataloader')
        if not loaders:
            continue
        is_one = 'dataset' in loaders
        for loader in [loaders] if is_one else loaders.values():
            loader.num_workers = 0
            loader.persistent_workers = False
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.train_cfg.pop('val_interval', None)
    cfg.train_cfg.pop('val_begin', None)
    cfg.default_hooks.checkpoint = None
    if cfg.default_hooks.get('logger') is not None:
        cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg


def compare(before: dict, after: dict, rtol: float) -> float:
    """The largest relative difference of two traces (ValueError when they
    do not log the same iterations, tasks and keys)."""
    a, b = before['records'], after['records']
    if len(a) != len(b):
        raise ValueError(f'{len(a)} iterations before, {len(b)} after')
    worst = 0.0
    for ra, rb in zip(a, b):
        if (ra['iter'], ra['task']) != (rb['iter'], rb['task']):
            raise ValueError(f'iteration {ra} vs {rb}: different tasks')
        if set(ra['values']) != set(rb['values']):
            raise ValueError(
                f'iteration {ra["iter"]}: keys {sorted(ra["values"])} vs '
                f'{sorted(rb["values"])}'
            )
        for key, va in ra['values'].items():
            vb = rb['values'][key]
            diff = abs(va - vb)
            if diff <= 1e-12:
                continue
            worst = max(worst, diff / max(abs(va), abs(vb)))
    return worst


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--init', help='initial state_dict to load')
    group.add_argument('--save-init', help='write the initial state_dict')
    parser.add_argument('--out', help='write the trace JSON here')
    parser.add_argument('--compare', help='an earlier trace JSON')
    parser.add_argument('--rtol', type=float, default=1e-6)
    parser.add_argument('--work-dir', help='default: a temporary folder')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # a toy set (and its tokenizer) absent is generated, as tools/train.py
    prepare_toy_data(cfg, ('train_dataloader',))
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='loss_trace_')
    cfg = trace_config(cfg, work_dir)
    cfg.randomness = dict(seed=args.seed)
    hook = LossTraceHook(args.iters, args.seed, args.init, args.save_init)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(hook, priority='VERY_HIGH')
    runner.train()
    trace = dict(
        config=args.config,
        seed=args.seed,
        iters=args.iters,
        init=args.init or args.save_init,
        records=hook.records,
    )
    text = json.dumps(trace, indent=1)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    else:
        print(text)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        try:
            worst = compare(before, trace, args.rtol)
        except ValueError as e:
            print(f'DIFFERENT: {e}')
            return 1
        ok = worst <= args.rtol
        print(
            f'{"SAME" if ok else "DIFFERENT"}: {len(trace["records"])} '
            f'iterations, max relative difference {worst:.3g} '
            f'(rtol {args.rtol:g})'
        )
        return 0 if ok else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
