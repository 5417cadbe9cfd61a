# Copyright (c) mmvfm contributors. All rights reserved.
"""How large MT-AdamW's steps are, against AdamW's, on a synthetic problem.

    python tools/analysis_tools/mt_adamw_update_sizes.py \\
        [--tasks 5] [--steps 600] [--at 50 100 600] [--dims 256] [--seed 0]

One shared parameter (a gradient at every step) and one head per task (a
gradient on its task's steps only); tasks in turn, so each has ratio
``s = 1 / tasks``. Gradients are a fixed mean plus unit noise. The real
optimizers (``torch.optim.AdamW`` at betas (0.9, 0.999), ``MTAdamW`` at the
paper's (0.1, 0.001), with and without bias correction, ``untouched``
``'skip'`` and ``'decay'``) step the same gradients; the table gives each
one's update RMS / lr at the ``--at`` steps, as ``UpdateSizeHook`` logs it
in a run (the head: the one of that step's task).
"""

import argparse
import os.path as osp
import sys
from typing import Dict, List, Tuple

import torch

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmvfm.engine.optimizers import MTAdamW  # noqa: E402

ARMS = (
    ('AdamW', None),
    ("MT-AdamW 'skip'", dict(bias_correction=False, untouched='skip')),
    (
        "MT-AdamW 'skip' + bias corr.",
        dict(bias_correction=True, untouched='skip'),
    ),
    ("MT-AdamW 'decay'", dict(bias_correction=False, untouched='decay')),
    (
        "MT-AdamW 'decay' + bias corr.",
        dict(bias_correction=True, untouched='decay'),
    ),
)


def update_sizes(
    arm, tasks: int, steps: int, at: List[int], dims: int, seed: int
) -> Dict[int, Tuple[float, float]]:
    """step -> (shared, task-only) update RMS / lr."""
    lr = 1e-3
    shared = torch.nn.Parameter(torch.zeros(dims, dtype=torch.float64))
    heads = [
        torch.nn.Parameter(torch.zeros(dims, dtype=torch.float64))
        for _ in range(tasks)
    ]
    params = [shared, *heads]
    if arm is None:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    else:
        ratios = {str(k): 1.0 / tasks for k in range(tasks)}
        opt = MTAdamW(params, task_ratios=ratios, lr=lr, **arm)
    gen = torch.Generator().manual_seed(seed)
    mean = 0.3 * torch.randn(dims, generator=gen, dtype=torch.float64)
    out = {}
    for t in range(1, steps + 1):
        k = (t - 1) % tasks
        before = (shared.detach().clone(), heads[k].detach().clone())
        for p in params:
            p.grad = None
        shared.grad = mean + torch.randn(
            dims, generator=gen, dtype=torch.float64
        )
        heads[k].grad = mean + torch.randn(
            dims, generator=gen, dtype=torch.float64
        )
        if arm is not None:
            opt.set_task(str(k))
        opt.step()
        if t in at:
            out[t] = tuple(
                float((p.detach() - b).pow(2).mean().sqrt()) / lr
                for p, b in zip((shared, heads[k]), before)
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', type=int, default=5)
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--at', type=int, nargs='+', default=[50, 100, 600])
    parser.add_argument('--dims', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.tasks < 1 or any(not 1 <= t <= args.steps for t in args.at):
        parser.error('--tasks >= 1 and every --at step in 1..--steps')
    at = sorted(set(args.at))
    print(
        f'update RMS / lr, {args.tasks} tasks in turn (s = '
        f'{1 / args.tasks:.3g}), {args.dims} elements, seed {args.seed}'
    )
    head = ' | '.join(f'shared @{t} | task-only @{t}' for t in at)
    print(f'| optimizer | {head} |')
    print('|---' * (1 + 2 * len(at)) + '|')
    for name, arm in ARMS:
        sizes = update_sizes(
            arm, args.tasks, args.steps, at, args.dims, args.seed
        )
        cells = ' | '.join(
            f'{sizes[t][0]:.2f} | {sizes[t][1]:.2f}' for t in at
        )
        print(f'| {name} | {cells} |')


if __name__ == '__main__':
    main()
