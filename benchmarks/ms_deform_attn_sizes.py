# Copyright (c) mmvfm contributors. All rights reserved.
"""The compiled multi-scale deformable attention vs the pure-PyTorch
reference at four sizes, on any device, with torch alone (no mmcv, mmdet or
mmvfm install: the op file is loaded by path and its kernels are built by
``torch.utils.cpp_extension.load`` when ``mmvfm._ext`` is missing) -- the
script for a GPU machine:

    TORCH_CUDA_ARCH_LIST=9.0 python benchmarks/ms_deform_attn_sizes.py \\
        --device cuda [--dtypes float32 float16 bfloat16]

Per size and dtype: the forward output and the gradients of value,
locations and weights against the float64 reference on the same inputs
(max abs error; for the locations the 99.9th percentile and the number of
'kinks': entries off by more than 1% of the largest, where a point within
rounding of a pixel centre takes the other one-sided derivative), then
forward + backward time, median of interleaved repeats, kernel vs
reference. Sizes (batch 2, 8 heads of 32,
4 points; queries = keys as in the encoder, except the decoder row):
4 levels from 13x19 (small) up to 100x152 (COCO), and a decoder (300
queries on the COCO levels). Locations: reference points on the pixel
centres plus N(0, 2 px) offsets per level.
"""

import argparse
import importlib.util
import os.path as osp
import sys
import tempfile

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    pixel_centres,
    setup_device,
)

OP_PATH = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))),
    'mmvfm',
    'ops',
    'ms_deform_attn.py',
)
COCO = [(100, 152), (50, 76), (25, 38), (13, 19)]
SIZES = {
    'small (1/8 COCO)': ([(h // 8 + 1, w // 8 + 1) for h, w in COCO], None),
    'medium (1/4 COCO)': ([(h // 4 + 1, w // 4 + 1) for h, w in COCO], None),
    'half COCO': ([(h // 2 + 1, w // 2 + 1) for h, w in COCO], None),
    'COCO encoder': (COCO, None),
    'COCO decoder (300 q)': (COCO, 300),
}


def load_op():
    spec = importlib.util.spec_from_file_location('_msda_op', OP_PATH)
    op = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = op
    spec.loader.exec_module(op)
    if not op.ext_available():
        print('building the ops (torch.utils.cpp_extension.load) ...')
        op.load_ext_jit(
            with_cuda=torch.cuda.is_available(),
            build_directory=tempfile.mkdtemp(prefix='mmvfm_ext_'),
        )
    return op


def make_inputs(shapes, queries, device, dtype, batch=2, heads=8, ch=32):
    gen = torch.Generator().manual_seed(0)
    shapes_t = torch.tensor(shapes)
    keys = int(shapes_t.prod(1).sum())
    refs = pixel_centres(shapes)
    if queries is not None:
        refs = torch.rand(queries, 2, generator=gen)
    num_q, levels = refs.shape[0], len(shapes)
    offsets = torch.randn(batch, num_q, heads, levels, 4, 2, generator=gen)
    loc = refs[None, :, None, None, None] + 2 * offsets / shapes_t.flip(1)[
        None, None, None, :, None
    ].to(torch.float32)
    value = torch.randn(batch, keys, heads, ch, generator=gen)
    attn = torch.rand(batch, num_q, heads, levels, 4, generator=gen)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return (
        value.to(device, dtype),
        shapes_t.to(device),
        loc.to(device, dtype),
        attn.to(device, dtype),
    )


def fwd_bwd(fn, inputs):
    value, shapes, loc, attn = inputs
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]

    def run():
        out = fn(leaves[0], shapes, leaves[1], leaves[2])
        out.float().square().sum().backward()
        return out.detach(), [t.grad for t in leaves]

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--dtypes', nargs='+', default=['float32'])
    add_device_args(parser)
    args = parser.parse_args()
    device = setup_device(args)
    op = load_op()
    name = (
        torch.cuda.get_device_name()
        if device.startswith('cuda')
        else f'CPU, {torch.get_num_threads()} threads'
    )
    print(f'torch {torch.__version__}, {name}')
    print(
        '| size | dtype | max err out / value / weight | loc err p99.9 '
        '(kinks) | reference ms | kernel ms | speed-up |'
    )
    print('|---|---|---|---|---|---|---|')
    for size, (shapes, queries) in SIZES.items():
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            inputs = make_inputs(shapes, queries, device, dtype)
            exact = fwd_bwd(
                op.ms_deform_attn_pytorch,
                [t.double() if t.is_floating_point() else t for t in inputs],
            )()
            got = fwd_bwd(op.ms_deform_attn, inputs)()
            errs = [
                (g.double() - e).abs().max().item()
                for g, e in zip(
                    [got[0], got[1][0], got[1][2]],
                    [exact[0], exact[1][0], exact[1][2]],
                )
            ]
            loc_err = (got[1][1].double() - exact[1][1]).abs().flatten()
            loc_p999 = loc_err.quantile(0.999).item()
            kinks = int(
                (loc_err > 0.01 * exact[1][1].abs().max()).sum().item()
            )
            medians = interleaved_median(
                {
                    'reference': fwd_bwd(op.ms_deform_attn_pytorch, inputs),
                    'kernel': fwd_bwd(op.ms_deform_attn, inputs),
                },
                args.repeats,
                args.warmup,
                device,
            )
            print(
                f'| {size} | {dtype_name} | '
                + ' / '.join(f'{e:.1e}' for e in errs)
                + f' | {loc_p999:.1e} ({kinks}/{loc_err.numel()})'
                + f' | {medians["reference"] * 1e3:.2f} | '
                f'{medians["kernel"] * 1e3:.2f} | '
                f'{medians["reference"] / medians["kernel"]:.1f}x |'
            )


if __name__ == '__main__':
    main()
