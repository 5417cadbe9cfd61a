# Copyright (c) mmvfm contributors. All rights reserved.
"""Multi-scale deformable attention on the CPU: mmvfm's C++ kernel vs
mmcv's PyTorch fallback, for the op, for mmcv's module and for a toy
Deformable DETR training step.

Fixed sizes (Deformable DETR's encoder at COCO size): batch 1, levels
100x152, 50x76, 25x38, 13x19 (19947 queries = keys), 8 heads of 32
channels (256), 4 points. The op's inputs are those that mmcv's
``MultiScaleDeformableAttention`` (its own ``init_weights``: ring offsets
of 1-4 px, uniform weights, perturbed by N(0, 1 px)) computes for the
encoder's reference points, captured from one forward.

- ``op``: forward + backward (w.r.t. value, locations, weights) of
  ``multi_scale_deformable_attn_pytorch`` (mmcv's fallback, the baseline)
  vs ``mmvfm.ops.ms_deform_attn`` (the kernel);
- ``module``: mmcv's ``MultiScaleDeformableAttention`` (projections
  included) forward + backward with the fallback vs with the kernel;
- ``step``: ``model.loss`` + backward of the toy Deformable DETR
  (configs/gqpos/deformable-detr_r18-w32_1xb8-500i_toy-coco.py, batch 8,
  128 px, random boxes) with the fallback, with the kernel, and with a
  free op (zeros: the step without the operator). The operator's share of
  the step is ``1 - free / fallback``; no kernel can make the step faster
  than ``fallback / free`` (Amdahl).

Every variant is checked against the fallback before anything is timed.

    python benchmarks/ms_deform_attn.py [--parts op module step]
        [--repeats 10] [--warmup 2] [--threads 2]
"""

import argparse
import contextlib
import os.path as osp
import sys
from typing import Callable, Iterator

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    pixel_centres,
    report,
    setup_device,
)

import mmvfm  # noqa: E402,F401  (stack fixes, registries)
from mmvfm.compat import mmcv_msda_pytorch  # noqa: E402
from mmvfm.ops import ext_available, ms_deform_attn  # noqa: E402

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHAPES = [(100, 152), (50, 76), (25, 38), (13, 19)]
EMBED, HEADS, POINTS = 256, 8, 4
TOY_CONFIG = 'configs/gqpos/deformable-detr_r18-w32_1xb8-500i_toy-coco.py'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--parts',
        nargs='+',
        default=['op', 'module', 'step'],
        choices=['op', 'module', 'step'],
    )
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    add_device_args(parser)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 2
    return args


def _free_op(value, spatial_shapes, sampling_locations, attention_weights):
    """Zeros of the op's output shape, still connected to the inputs."""
    B, _, H, C = value.shape
    out = value.new_zeros(B, sampling_locations.shape[1], H * C)
    return out + 0 * (
        value.sum() + sampling_locations.sum() + attention_weights.sum()
    )


@contextlib.contextmanager
def op_impl(name: str) -> Iterator[None]:
    """mmcv's module runs the fallback ('mmcv'), mmvfm's kernel
    ('kernel') or no op at all ('free') inside the block."""
    from mmcv.ops import multi_scale_deform_attn as msda

    impl = {
        'mmcv': mmcv_msda_pytorch(),
        'kernel': lambda v, s, loc, a: ms_deform_attn(v, s, loc, a),
        'free': _free_op,
    }[name]
    saved = msda.multi_scale_deformable_attn_pytorch
    msda.multi_scale_deformable_attn_pytorch = impl
    try:
        yield
    finally:
        msda.multi_scale_deformable_attn_pytorch = saved


def encoder_layer():
    """mmcv's attention module at COCO size and its encoder inputs."""
    from mmcv.ops import MultiScaleDeformableAttention

    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(
        embed_dims=EMBED,
        num_heads=HEADS,
        num_levels=len(SHAPES),
        num_points=POINTS,
        dropout=0.0,  # the same output from both implementations
        batch_first=True,
    )
    attn.init_weights()
    with torch.no_grad():  # perturb the init: offsets ~N(0, 1 px) more
        attn.sampling_offsets.bias.add_(
            torch.randn_like(attn.sampling_offsets.bias)
        )
    shapes = torch.tensor(SHAPES)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    refs = pixel_centres(SHAPES)
    num = refs.shape[0]
    query = torch.randn(1, num, EMBED)
    kwargs = dict(
        query=query,
        value=query,
        query_pos=torch.randn(1, num, EMBED),
        reference_points=refs[None, :, None].repeat(1, 1, len(SHAPES), 1),
        spatial_shapes=shapes,
        level_start_index=starts,
    )
    return attn, kwargs


def capture_op_inputs(attn, kwargs) -> dict:
    """The op's inputs in one forward of the module."""
    captured = {}

    def capture(value, spatial_shapes, sampling_locations, attention_weights):
        captured.update(
            value=value.detach().clone(),
            spatial_shapes=spatial_shapes,
            sampling_locations=sampling_locations.detach().clone(),
            attention_weights=attention_weights.detach().clone(),
        )
        return _free_op(
            value, spatial_shapes, sampling_locations, attention_weights
        )

    from mmcv.ops import multi_scale_deform_attn as msda

    saved = msda.multi_scale_deformable_attn_pytorch
    msda.multi_scale_deformable_attn_pytorch = capture
    try:
        with torch.no_grad():
            attn(**kwargs)
    finally:
        msda.multi_scale_deformable_attn_pytorch = saved
    return captured


def fwd_bwd(fn: Callable, inputs: dict, grads=('value',)) -> Callable:
    """A forward + backward of ``fn(*inputs.values())`` (the op's
    positional order) w.r.t. ``grads``."""
    leaves = {
        k: (v.requires_grad_() if k in grads else v) for k, v in inputs.items()
    }

    def run():
        for k in grads:
            leaves[k].grad = None
        out = fn(*leaves.values())
        out.sum().backward()
        return out

    return run


def check_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a - b).abs().max().item()
    scale = b.abs().max().item()
    if err > 1e-4 * max(1.0, scale):
        raise SystemExit(f'{what}: max abs error {err:.3g} (scale {scale})')


def bench_op(args) -> None:
    attn, kwargs = encoder_layer()
    inputs = capture_op_inputs(attn, kwargs)
    grads = ('value', 'sampling_locations', 'attention_weights')
    mmcv_fn = mmcv_msda_pytorch()
    fns = {
        'mmcv fallback': fwd_bwd(mmcv_fn, dict(inputs), grads),
        'mmvfm kernel': fwd_bwd(
            ms_deform_attn,
            {
                k: v.clone() if k != 'spatial_shapes' else v
                for k, v in inputs.items()
            },
            grads,
        ),
    }
    check_close(fns['mmvfm kernel'](), fns['mmcv fallback'](), 'op output')
    medians = interleaved_median(fns, args.repeats, args.warmup)
    print('\n[op] forward + backward, COCO-size encoder layer')
    print(report(medians, 'mmcv fallback'))


def bench_module(args) -> None:
    attn, kwargs = encoder_layer()
    query = kwargs.pop('query').requires_grad_()

    def make(name):
        def run():
            query.grad = None
            attn.zero_grad()
            with op_impl(name):
                out = attn(query=query, **kwargs)
            out.sum().backward()
            return out

        return run

    fns = {'mmcv fallback': make('mmcv'), 'mmvfm kernel': make('kernel')}
    check_close(fns['mmvfm kernel'](), fns['mmcv fallback'](), 'module')
    medians = interleaved_median(fns, args.repeats, args.warmup)
    print('\n[module] MultiScaleDeformableAttention forward + backward')
    print(report(medians, 'mmcv fallback'))


def bench_step(args) -> None:
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmvfm.utils import drop_pretrained, load_config, register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = load_config(osp.join(REPO_ROOT, TOY_CONFIG))
    drop_pretrained(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    batch, size = cfg.train_dataloader.batch_size, 128
    gen = torch.Generator().manual_seed(0)
    imgs = torch.randn(batch, 3, size, size, generator=gen)
    samples = []
    for _ in range(batch):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size),
                batch_input_shape=(size, size),
                scale_factor=(1.0, 1.0),
            )
        )
        xy = torch.rand(3, 2, generator=gen) * size / 2
        wh = torch.rand(3, 2, generator=gen) * size / 2 + 8
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1),
            labels=torch.randint(0, 5, (3,), generator=gen),
        )
        samples.append(sample)

    def make(name):
        def run():
            model.zero_grad()
            torch.manual_seed(1)  # the same dropout masks
            with op_impl(name):
                losses = model.loss(imgs, samples)
            loss = sum(v for k, v in losses.items() if 'loss' in k)
            loss.backward()
            return loss.detach()

        return run

    fns = {
        n: make(k)
        for n, k in [
            ('mmcv fallback', 'mmcv'),
            ('mmvfm kernel', 'kernel'),
            ('free op', 'free'),
        ]
    }
    check_close(fns['mmvfm kernel'](), fns['mmcv fallback'](), 'step loss')
    medians = interleaved_median(fns, args.repeats, args.warmup)
    print(f'\n[step] {TOY_CONFIG}: loss + backward, batch {batch}, {size} px')
    print(report(medians, 'mmcv fallback'))
    share = 1 - medians['free op'] / medians['mmcv fallback']
    print(
        f"operator share of the step with mmcv's fallback: {share:.1%}; "
        f'bound on the step speed-up: {1 / (1 - share):.2f}x; reached: '
        f'{medians["mmcv fallback"] / medians["mmvfm kernel"]:.2f}x'
    )


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    if device != 'cpu':
        raise SystemExit('error: this benchmark is CPU-only (see --help)')
    if not ext_available():
        raise SystemExit(
            "error: mmvfm's ops are not built (MMVFM_WITH_OPS=1 pip install "
            '--no-build-isolation -e .)'
        )
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}')
    for part in args.parts:
        {'op': bench_op, 'module': bench_module, 'step': bench_step}[part](
            args
        )


if __name__ == '__main__':
    main()
