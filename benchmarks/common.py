# Copyright (c) mmvfm contributors. All rights reserved.
"""Timing helpers shared by the benchmark scripts."""

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--threads T`` (intra-op CPU threads) and ``--device cpu|cuda``."""
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu')


def setup_device(args: argparse.Namespace) -> str:
    """Apply ``--threads``; return ``--device``, refusing CUDA where there
    is none."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but CUDA is not available')
    return args.device


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def interleaved_median(
    fns: Dict[str, Callable[[], object]],
    repeats: int = 10,
    warmup: int = 2,
    device: str = 'cpu',
) -> Dict[str, float]:
    """Median wall time (s) of each callable, timed in interleaved rounds.

    Args:
        fns: name -> zero-argument callable (e.g. a forward+backward).
        repeats: timed rounds; each round runs every callable once.
        warmup: untimed rounds first.
        device: ``'cuda...'`` synchronises around each call.

    Returns:
        dict: name -> median seconds.
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(medians: Dict[str, float], baseline: str) -> str:
    """Format medians with their ratio to ``baseline`` (speed-up > 1 means
    faster than the baseline)."""
    base = medians[baseline]
    lines = [f'threads={torch.get_num_threads()}']
    for name, t in medians.items():
        lines.append(
            f'{name:>24s}: {t * 1e3:9.2f} ms   '
            f'speed-up vs {baseline}: {base / t:5.2f}x'
        )
    return '\n'.join(lines)


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak bytes allocated during ``fn()`` beyond what was live before."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in p.profiler.kineto_results.events()
        if e.name() == '[memory]' and 'CPU' in str(e.device_type())
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def pixel_centres(shapes) -> torch.Tensor:
    """Normalised ``(x, y)`` of every pixel centre of levels ``shapes``
    ``[(h, w), ...]``, level by level, row-major: (sum h*w, 2) -- the
    reference points of a Deformable DETR encoder."""
    return torch.cat(
        [
            torch.stack(
                torch.meshgrid(
                    (torch.arange(w) + 0.5) / w,
                    (torch.arange(h) + 0.5) / h,
                    indexing='xy',
                ),
                -1,
            ).reshape(-1, 2)
            for h, w in shapes
        ]
    )
