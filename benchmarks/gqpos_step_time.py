# Copyright (c) mmvfm contributors. All rights reserved.
"""Training-step time of each GQPos target with GQPos on vs off.

For each target (DETR, Conditional DETR, Deformable DETR without and with
box refinement) the COCO config of configs/gqpos/ is built twice from the
same seed: off (the stock mmdet detector) and on (``GQPos*`` with the
config's ``gqpos``); the stock weights are loaded into the GQPos model, so
only the ``gqpos.*`` weights differ (checked). Before timing, the GQPos
model with its MLPs' last layers zeroed must give the stock losses (same
dropout masks from the same seed): the decoder loop it runs is the stock
one.

Fixed sizes: batch 2, 256 x 256 inputs, 100 queries, 3 random boxes per
image, ResNet-50 as in the configs (no pretrained weights). One step =
``model.loss`` + backward (no optimizer). Timings are medians of
interleaved repeats (off, on, off, on, ...).

    python benchmarks/gqpos_step_time.py [--repeats 5] [--warmup 1]
        [--targets detr conditional_detr deformable_detr
         deformable_detr_refine] [--threads T] [--device cpu]
"""

import argparse
import copy
import os.path as osp
import sys
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    setup_device,
)

import mmvfm  # noqa: E402,F401  (stack fixes, registries)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'detr': 'gqpos_detr_r50_8xb2-150e_coco.py',
    'conditional_detr': 'gqpos_conditional-detr_r50_8xb2-50e_coco.py',
    'deformable_detr': 'gqpos_deformable-detr_r50_16xb2-50e_coco.py',
    'deformable_detr_refine': (
        'gqpos_deformable-detr-refine_r50_16xb2-50e_coco.py'
    ),
}
BATCH, SIZE, NUM_QUERIES, NUM_BOXES = 2, 256, 100, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--targets', nargs='+', default=list(CONFIGS), choices=list(CONFIGS)
    )
    add_device_args(parser)
    return parser.parse_args()


def model_cfgs(target: str) -> Tuple[dict, dict]:
    """(stock, GQPos) model configs with 100 queries, no downloads."""
    from mmvfm.utils import drop_pretrained, load_config

    cfg = load_config(osp.join(REPO_ROOT, 'configs', 'gqpos', CONFIGS[target]))
    on = cfg.model.to_dict()
    drop_pretrained(on)
    on['num_queries'] = NUM_QUERIES
    off = copy.deepcopy(on)
    off['type'] = on['type'][len('GQPos') :]
    off.pop('gqpos')
    return off, on


def build_pair(target: str, device: str):
    """Stock and GQPos models with the same weights (but ``gqpos.*``)."""
    from mmdet.registry import MODELS

    off_cfg, on_cfg = model_cfgs(target)
    on_cfg['gqpos'] = dict(on_cfg['gqpos'], zero_init=True)
    torch.manual_seed(0)
    off = MODELS.build(off_cfg)
    off.init_weights()
    on = MODELS.build(on_cfg)
    result = on.load_state_dict(off.state_dict(), strict=False)
    new_keys = {k for k in on.state_dict() if k.startswith('gqpos.')}
    assert set(result.missing_keys) == new_keys and new_keys, result
    assert not result.unexpected_keys, result
    return off.to(device).train(), on.to(device).train()


def make_batch(device: str) -> Tuple[torch.Tensor, List]:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    gen = torch.Generator().manual_seed(0)
    imgs = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    samples = []
    for _ in range(BATCH):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(SIZE, SIZE),
                ori_shape=(SIZE, SIZE),
                pad_shape=(SIZE, SIZE),
                batch_input_shape=(SIZE, SIZE),
                scale_factor=(1.0, 1.0),
            )
        )
        xy = torch.rand(NUM_BOXES, 2, generator=gen) * SIZE / 2
        wh = torch.rand(NUM_BOXES, 2, generator=gen) * SIZE / 2 + 8
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1).to(device),
            labels=torch.randint(0, 80, (NUM_BOXES,), generator=gen).to(
                device
            ),
        )
        samples.append(sample)
    return imgs.to(device), samples


def total_loss(model, imgs, samples) -> torch.Tensor:
    losses = model.loss(imgs, samples)
    return sum(v for k, v in losses.items() if 'loss' in k)


def check_same(off, on, imgs, samples) -> None:
    """Zeroed GQPos MLPs: the stock losses (same seed, same dropout)."""
    with torch.no_grad():
        torch.manual_seed(1)
        a = total_loss(off, imgs, samples)
        torch.manual_seed(1)
        b = total_loss(on, imgs, samples)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def step_fn(model, imgs, samples) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        total_loss(model, imgs, samples).backward()

    return step


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    from mmengine.logging import MMLogger

    from mmvfm.utils import register_all_modules

    # the current logger: no per-parameter init_weights report
    MMLogger.get_instance('gqpos_step_time', log_level='WARNING')
    register_all_modules(init_default_scope=True)
    print(
        f'device={device} threads={torch.get_num_threads()} '
        f'torch={torch.__version__}; batch {BATCH} x {SIZE} px, '
        f'{NUM_QUERIES} queries, repeats={args.repeats} warmup={args.warmup}'
    )
    imgs, samples = make_batch(device)
    rows: Dict[str, Tuple[float, float]] = {}
    for target in args.targets:
        off, on = build_pair(target, device)
        check_same(off, on, imgs, samples)
        medians = interleaved_median(
            {
                'off': step_fn(off, imgs, samples),
                'on': step_fn(on, imgs, samples),
            },
            repeats=args.repeats,
            warmup=args.warmup,
            device=device,
        )
        rows[target] = (medians['off'], medians['on'])
        print(
            f'{target:>24s}: off {medians["off"] * 1e3:8.1f} ms   '
            f'on {medians["on"] * 1e3:8.1f} ms   '
            f'on/off {medians["on"] / medians["off"]:.3f}x',
            flush=True,
        )
        del off, on
    print('| target | off (ms) | on (ms) | on / off |')
    print('|---|---|---|---|')
    for target, (t_off, t_on) in rows.items():
        print(
            f'| {target} | {t_off * 1e3:.0f} | {t_on * 1e3:.0f} | '
            f'{t_on / t_off:.3f}x |'
        )


if __name__ == '__main__':
    main()
