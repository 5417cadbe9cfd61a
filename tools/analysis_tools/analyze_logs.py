# Copyright (c) mmvfm contributors. All rights reserved.
"""Plot training curves (losses, mAP, lr) from mmengine's scalar logs.

Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` (one JSON object per
line, written by mmengine's LocalVisBackend); a work dir or a timestamp
folder is accepted too.

    python tools/analysis_tools/analyze_logs.py plot_curve LOG [LOG ...] \
        --keys loss coco/bbox_mAP --out curves.png
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG

Ours, not mmdet's ``analyze_logs.py`` (``mim run mmdet analyze_logs``,
which needs seaborn): mmdet's groups the values by epoch, so an
iteration-based run (every toy config) is a single epoch there; this one
plots against the iteration and takes work dirs.
"""

import argparse
import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np


def find_scalar_file(path: str) -> str:
    """Resolve a scalars.json from a file, a run folder or a work dir."""
    if osp.isfile(path):
        return path
    for pattern in ('vis_data/scalars.json', '*/vis_data/scalars.json'):
        found = sorted(glob.glob(osp.join(path, pattern)))
        if found:
            return found[-1]  # latest timestamp
    raise FileNotFoundError(
        f'no scalars.json under "{path}" (expected a scalars.json file, '
        'a <timestamp> folder or a work dir)'
    )


def load_scalars(path: str) -> Dict[str, List[tuple]]:
    """Read a scalars.json into ``{key: [(step, value), ...]}``.

    Keys are as logged: train entries (``loss``, ``lr``, ...) and val
    entries (``coco/bbox_mAP``, ...), each with its own steps.
    """
    series: Dict[str, List[tuple]] = defaultdict(list)
    with open(find_scalar_file(path), encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            step = entry.get('step', entry.get('iter', entry.get('epoch')))
            for key, value in entry.items():
                if key in ('step', 'iter', 'epoch') or not isinstance(
                    value, (int, float)
                ):
                    continue
                series[key].append((step, float(value)))
    return dict(series)


def plot_curve(
    logs: Sequence[str],
    keys: Sequence[str],
    out: Optional[str] = None,
    legend: Optional[list] = None,
    title: Optional[str] = None,
):
    """Plot ``keys`` of every log, one subplot per key.

    Returns:
        matplotlib.figure.Figure
    """
    import matplotlib

    if out is not None:
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    data = [load_scalars(log) for log in logs]
    legend = legend or [osp.basename(osp.normpath(log)) for log in logs]
    if len(legend) != len(logs):
        raise ValueError(f'{len(legend)} legends for {len(logs)} logs')
    for log, series in zip(logs, data):
        missing = [k for k in keys if k not in series]
        if missing:
            raise KeyError(f'{log} has no {missing}; it has {sorted(series)}')
    fig, axes = plt.subplots(
        1, len(keys), figsize=(5 * len(keys), 4), squeeze=False
    )
    for ax, key in zip(axes[0], keys):
        for name, series in zip(legend, data):
            steps, values = zip(*series[key])
            marker = 'o' if len(steps) < 20 else None
            ax.plot(steps, values, label=name, marker=marker, linewidth=1)
        ax.set_xlabel('iter')
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
        print(f'saved curves to {out}')
    else:
        plt.show()
    return fig


def cal_train_time(log: str) -> dict:
    """Seconds per training iteration (the logged ``time``) of a log."""
    series = load_scalars(log)
    if 'time' not in series:
        raise KeyError(f'{log} has no "time" entries')
    times = np.array([v for _, v in series['time']])
    stats = dict(
        mean=float(times.mean()),
        std=float(times.std()),
        slowest=float(times.max()),
        fastest=float(times.min()),
    )
    print(
        f'{log}: {stats["mean"]:.4f} s/iter on average '
        f'(std {stats["std"]:.4f}, fastest {stats["fastest"]:.4f}, '
        f'slowest {stats["slowest"]:.4f})'
    )
    return stats


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Analyze mmengine logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot curves of given keys')
    plot.add_argument(
        'logs', nargs='+', help='scalars.json files, run folders or work dirs'
    )
    plot.add_argument(
        '--keys',
        nargs='+',
        default=['loss'],
        help='keys to plot, e.g. loss coco/bbox_mAP',
    )
    plot.add_argument('--legend', nargs='+', default=None)
    plot.add_argument('--title', default=None)
    plot.add_argument('--out', default=None, help='save to this image')
    time = sub.add_parser('cal_train_time', help='time per iteration')
    time.add_argument('logs', nargs='+')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.task == 'plot_curve':
            plot_curve(args.logs, args.keys, args.out, args.legend, args.title)
        else:
            for log in args.logs:
                cal_train_time(log)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
    main()
