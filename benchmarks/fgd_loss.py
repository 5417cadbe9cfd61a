# Copyright (c) mmvfm contributors. All rights reserved.
"""FGDLoss vs FGDLossReference (the reference computation): forward +
backward over the FPN levels of a RetinaNet-sized batch.

Defaults: a 2 x 3 x 800 x 1216 batch, 5 FPN levels (strides 8..128, maps
ceil(800 / s) x ceil(1216 / s)), 256 channels, 30 random valid boxes per
image, teacher maps without grad, student maps with grad. Both losses are
checked to give the same total and terms before anything is timed.

    python benchmarks/fgd_loss.py [--repeats 10] [--warmup 2] [--levels 5]
        [--channels 256] [--boxes 30] [--threads T] [--device cpu]
        [--profile]
"""

import argparse
import math
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    report,
    setup_device,
)

from mmvfm.models.losses import FGDLoss  # noqa: E402
from mmvfm.testing import FGDLossReference  # noqa: E402

BATCH, IMG_H, IMG_W = 2, 800, 1216
STRIDES = (8, 16, 32, 64, 128)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--levels', type=int, default=5, choices=[1, 2, 3, 4, 5]
    )
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--boxes', type=int, default=30)
    add_device_args(parser)
    parser.add_argument(
        '--profile',
        action='store_true',
        help='also time the parts of one FGDLoss forward+backward',
    )
    return parser.parse_args()


def random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """n valid xyxy boxes (n, 4) inside the image, 8 px to half the
    image wide/high."""
    wh = (
        torch.rand(n, 2, generator=gen)
        * torch.tensor([IMG_W / 2 - 8, IMG_H / 2 - 8])
        + 8
    )
    xy = torch.rand(n, 2, generator=gen) * (torch.tensor([IMG_W, IMG_H]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


def make_inputs(
    args: argparse.Namespace, device: str
) -> Tuple[List[torch.Tensor], List[torch.Tensor], list, list]:
    """Student maps (with grad), teacher maps, boxes and metas."""
    gen = torch.Generator().manual_seed(0)
    feats_s, feats_t = [], []
    for stride in STRIDES[: args.levels]:
        shape = (
            BATCH,
            args.channels,
            math.ceil(IMG_H / stride),
            math.ceil(IMG_W / stride),
        )
        feats_s.append(
            torch.randn(shape, generator=gen).to(device).requires_grad_()
        )
        feats_t.append(torch.randn(shape, generator=gen).to(device))
    boxes = [random_boxes(args.boxes, gen).to(device) for _ in range(BATCH)]
    metas = [
        dict(img_shape=(IMG_H, IMG_W), batch_input_shape=(IMG_H, IMG_W))
        for _ in range(BATCH)
    ]
    return feats_s, feats_t, boxes, metas


def step_fn(losses, feats_s, feats_t, boxes, metas) -> Callable[[], None]:
    """One forward + backward of the sum over the levels."""

    def step() -> None:
        for f in feats_s:
            f.grad = None
        for loss in losses:
            loss.zero_grad(set_to_none=True)
        total = sum(
            loss(fs, ft, boxes, metas)
            for loss, fs, ft in zip(losses, feats_s, feats_t)
        )
        total.backward()

    return step


def check_same(ours, refs, feats_s, feats_t, boxes, metas) -> None:
    """Both versions give the same terms (rtol 1e-4, float32)."""
    for level, (a, b, fs, ft) in enumerate(zip(ours, refs, feats_s, feats_t)):
        with torch.no_grad():
            ta = a(fs, ft, boxes, metas, return_terms=True)
            tb = b(fs, ft, boxes, metas, return_terms=True)
        for key in ta:
            torch.testing.assert_close(
                ta[key],
                tb[key],
                rtol=1e-4,
                atol=1e-7,
                msg=lambda m, k=key, lv=level: f'level {lv} term {k}: {m}',
            )
    print('check: all terms equal within rtol 1e-4')


def profile_parts(loss: FGDLoss, fs, ft, boxes, metas, repeats: int) -> None:
    """Rough split of one level's FGDLoss forward+backward time."""
    N, C, H, W = ft.shape

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    with torch.no_grad():
        t_masks = timed(lambda: loss.get_masks(boxes, metas, (H, W)))
        t_att = timed(lambda: loss.get_attention(ft))

    def fwd_bwd() -> None:
        fs.grad = None
        loss(fs, ft, boxes, metas).backward()

    def fwd() -> None:
        with torch.no_grad():
            loss(fs, ft, boxes, metas)

    t_total = timed(fwd_bwd)
    t_fwd = timed(fwd)
    print(
        f'parts of level 0 ({tuple(ft.shape)}): forward+backward '
        f'{t_total:.1f} ms, forward (no grad) {t_fwd:.1f} ms, of which '
        f'masks {t_masks:.1f} ms, one attention {t_att:.1f} ms; one full '
        f'pass (x.abs()) takes {timed(lambda: fs.detach().abs()):.1f} ms'
    )


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    print(
        f'device={device} threads={torch.get_num_threads()} '
        f'torch={torch.__version__}'
    )
    feats_s, feats_t, boxes, metas = make_inputs(args, device)
    print(
        'levels: '
        + ', '.join(str(tuple(f.shape)) for f in feats_t)
        + f'; {args.boxes} boxes per image'
    )
    C = args.channels
    ours, refs = [], []
    torch.manual_seed(0)
    for _ in feats_s:
        a = FGDLoss(C, C).to(device)
        b = FGDLossReference(C, C, box_scale='pad').to(device)
        b.load_state_dict(a.state_dict())
        ours.append(a)
        refs.append(b)
    check_same(ours, refs, feats_s, feats_t, boxes, metas)

    fns: Dict[str, Callable[[], None]] = {
        'FGDLossReference': step_fn(refs, feats_s, feats_t, boxes, metas),
        'FGDLoss': step_fn(ours, feats_s, feats_t, boxes, metas),
    }
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    medians = interleaved_median(
        fns, repeats=args.repeats, warmup=args.warmup, device=device
    )
    print(report(medians, baseline='FGDLossReference'))
    print(
        'speed-up FGDLoss vs FGDLossReference: '
        f'{medians["FGDLossReference"] / medians["FGDLoss"]:.2f}x'
    )
    if device.startswith('cuda'):
        for name, fn in fns.items():
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**20
            print(f'peak memory {name}: {peak:.0f} MiB')
    if args.profile:
        profile_parts(
            ours[0], feats_s[0], feats_t[0], boxes, metas, args.repeats
        )


if __name__ == '__main__':
    main()
