# Copyright (c) mmvfm contributors. All rights reserved.
"""SiA attention vs plain (fusion off) dense multi-scale attention:
forward + backward time and peak memory of the op.

Defaults: batch 2, 100 queries, 8 heads of 32 channels (256 in all),
levels 8x8, 16x16, 32x32, 64x64 (coarse to fine), one padded image (the
second covers 3/4 of the batch in both directions), gradients w.r.t. the
query, keys, values and fusion weights. Variants:

- ``plain/pytorch``: explicit per-level maps, no fusion (the baseline);
- ``prob/pytorch``, ``logit/pytorch``: SiA with the explicit maps
  (:func:`similar_attention_pytorch`, the oracle);
- ``plain/sdpa``, ``prob/sdpa``: value folding on
  ``F.scaled_dot_product_attention`` (what ``impl='auto'`` runs for plain
  and ``'prob'``); ``logit/sdpa``: key folding with the cascaded padding
  bias on it (what ``impl='auto'`` runs for ``'logit'``).

Every variant is checked against the float64 oracle of its mode before
anything is timed. Peak memory: ``torch.cuda.max_memory_allocated`` on
CUDA; on CPU the maximum of the running sum of the allocations and frees
that ``torch.profiler`` records during one forward + backward (inputs
excluded, the returned gradients included).

Needs torch alone (the op file is loaded by path, no mmcv/mmdet):

    python benchmarks/sia_attention.py [--repeats 10] [--warmup 2]
        [--batch 2] [--queries 100] [--heads 8] [--channels 256]
        [--sizes 8 16 32 64] [--threads T] [--device cpu] [--no-mask]
"""

import argparse
import importlib.util
import os.path as osp
import sys
from typing import Callable, Dict

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    peak_bytes,
    report,
    setup_device,
)

_OP = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))),
    'mmvfm',
    'ops',
    'similar_attention.py',
)
_spec = importlib.util.spec_from_file_location('_sia_op', _OP)
sa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sa)

VARIANTS = {
    'plain/pytorch': (None, 'pytorch'),
    'prob/pytorch': ('prob', 'pytorch'),
    'logit/pytorch': ('logit', 'pytorch'),
    'plain/sdpa': (None, 'sdpa'),
    'prob/sdpa': ('prob', 'sdpa'),
    'logit/sdpa': ('logit', 'sdpa'),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--queries', type=int, default=100)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[8, 16, 32, 64],
        help='square level sizes, coarse to fine, each twice the last',
    )
    add_device_args(parser)
    parser.add_argument(
        '--no-mask', action='store_true', help='no padded image'
    )
    return parser.parse_args()


def make_inputs(args, device: str, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    B, H = args.batch, args.heads
    D = args.channels // H

    def rnd(*shape):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64)
        return t.to(device=device, dtype=dtype).requires_grad_()

    q = rnd(B, args.queries, H, D)
    keys = [rnd(B, H, s, s, D) for s in args.sizes]
    values = [rnd(B, H, s, s, D) for s in args.sizes]
    fw = torch.full((len(args.sizes) - 1, H), 0.5, dtype=torch.float64)
    fw = fw.to(device=device, dtype=dtype).requires_grad_()
    masks = None
    if not args.no_mask:
        masks = []
        for s in args.sizes:
            m = torch.zeros(B, s, s, dtype=torch.bool, device=device)
            valid = -(-3 * s // 4)  # the last image: ceil(3/4) of the
            m[-1, valid:, :] = True  # batch in both directions
            m[-1, :, valid:] = True
            masks.append(m)
    grad_out = torch.randn(
        B, args.queries, H, D, generator=gen, dtype=torch.float64
    ).to(device=device, dtype=dtype)
    return q, keys, values, fw, masks, grad_out


def step_fn(inputs, mode, impl) -> Callable[[], object]:
    q, keys, values, fw, masks, grad_out = inputs
    leaves = [q, *keys, *values] + ([fw] if mode else [])

    def step():
        out = sa.similar_attention(
            q, keys, values, fw if mode else None, mode, masks, impl=impl
        )
        return torch.autograd.grad(out, leaves, grad_out)

    return step


def check(args, device: str) -> None:
    """Each variant (float32) against the float64 oracle of its mode."""
    ref_in = make_inputs(args, device, torch.float64)
    inputs = make_inputs(args, device)
    q, keys, values, fw, masks, _ = inputs
    for name, (mode, impl) in VARIANTS.items():
        ref = sa.similar_attention_pytorch(
            *ref_in[:3], ref_in[3] if mode else None, mode, ref_in[4]
        )
        out = sa.similar_attention(
            q, keys, values, fw if mode else None, mode, masks, impl=impl
        )
        err = (out.double() - ref).abs().max().item()
        if err > 1e-4:
            raise AssertionError(f'{name}: max abs error {err:.3g}')


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    check(args, device)
    inputs = make_inputs(args, device)
    fns: Dict[str, Callable[[], object]] = {
        name: step_fn(inputs, mode, impl)
        for name, (mode, impl) in VARIANTS.items()
    }
    peaks = {name: peak_bytes(fn, device) for name, fn in fns.items()}
    medians = interleaved_median(fns, args.repeats, args.warmup, device)
    sizes = 'x'.join(str(s) for s in args.sizes)
    print(
        f'device={device} batch={args.batch} queries={args.queries} '
        f'heads={args.heads} channels={args.channels} levels={sizes} '
        f'padded={not args.no_mask} (forward + backward, float32)'
    )
    print(report(medians, 'plain/pytorch'))
    base = peaks['plain/pytorch']
    for name, peak in peaks.items():
        print(
            f'{name:>24s}: peak {peak / 2**20:9.1f} MiB   '
            f'vs plain/pytorch: {peak / base:5.2f}x'
        )
    print('SiA vs plain of the same implementation (time, peak memory):')
    for name in VARIANTS:
        mode, impl = name.split('/')
        if mode != 'plain':
            plain = f'plain/{impl}'
            print(
                f'{name:>24s}: {medians[name] / medians[plain]:5.2f}x time, '
                f'{peaks[name] / peaks[plain]:5.2f}x memory'
            )


if __name__ == '__main__':
    main()
