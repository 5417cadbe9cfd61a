# Copyright (c) mmvfm contributors. All rights reserved.
"""LoRA on a ViT-B backbone: what the adapter costs, merged and not.

Fixed sizes: mmpretrain's ``VisionTransformer`` arch ``'b'`` (768-d, 12
blocks, patch 16) at 224 px, batch 2, backbone only (no head); LoRA as
ViSFT's (every block's fused qkv, q and v only, rank 64, alpha 1).

- inference (no grad): the plain backbone (the baseline), the backbone
  with its adapters unmerged, and merged + unloaded
  (``merge_lora(unload=True)``: plain ``nn.Linear`` layers again; target
  <= 1.05x the plain backbone);
- training step (forward + backward of the features' mean square): full
  fine-tuning of the plain backbone (the baseline) vs LoRA only (base
  frozen);
- the trainable fraction of the parameters with LoRA only;
- peak memory of one LoRA-only training step (the maximum of the running
  sum of the allocations ``torch.profiler`` records, inputs excluded) with
  the blocks gradient-checkpointed (``enable_gradient_checkpointing``) vs
  without (target <= 0.5x).

Every variant is checked against the plain backbone first (the adapted
model with the same base weights and a random non-zero ``B``: its merged
form must equal its unmerged form).

    python benchmarks/lora.py [--repeats 5] [--warmup 1] [--threads 2]
"""

import argparse
import copy
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    peak_bytes,
    report,
    setup_device,
)

import mmvfm  # noqa: E402,F401  (registries)
from mmvfm.models.common import enable_gradient_checkpointing  # noqa: E402
from mmvfm.models.peft import apply_lora, lora_layers, merge_lora  # noqa: E402

BATCH, SIZE = 2, 224
VIT_B = dict(type='mmpretrain.VisionTransformer', arch='b', img_size=SIZE)
TARGETS = [dict(pattern=r'layers\.\d+\.attn\.qkv', parts=[True, False, True])]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--parts',
        nargs='+',
        default=['inference', 'step', 'memory'],
        choices=['inference', 'step', 'memory'],
    )
    add_device_args(parser)
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 2
    return args


def build():
    """(plain, LoRA, merged+unloaded) ViT-Bs with the same base weights."""
    from mmdet.registry import MODELS

    torch.manual_seed(0)
    plain = MODELS.build(copy.deepcopy(VIT_B))
    plain.init_weights()
    lora = copy.deepcopy(plain)
    apply_lora(lora, TARGETS, rank=64, alpha=1.0)
    with torch.no_grad():
        for _, layer in lora_layers(lora):
            layer.lora_B.normal_(std=0.02)
    merged = copy.deepcopy(lora)
    merge_lora(merged, unload=True)
    for m in (plain, lora, merged):
        m.eval()  # (mmpretrain's ViT.train returns None)
    return plain, lora, merged


def main() -> None:
    args = parse_args()
    setup_device(args)
    plain, lora, merged = build()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        out_lora, out_merged = lora(x)[0], merged(x)[0]
    err = (out_lora - out_merged).abs().max().item()
    if err > 1e-3 * out_lora.abs().max().item():
        raise SystemExit(f'merged != unmerged: max abs error {err:.3g}')
    n_lora = sum(
        isinstance(m, torch.nn.Module) for _, m in lora_layers(merged)
    )
    assert n_lora == 0, 'merged model still has LoRA layers'
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}')

    def infer(model):
        def run():
            with torch.no_grad():
                return model(x)

        return run

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(x)[0].square().mean().backward()

        return run

    full = copy.deepcopy(plain)
    for name, p in lora.named_parameters():
        p.requires_grad_('.lora_' in name)
    if 'inference' in args.parts:
        medians = interleaved_median(
            {
                'plain backbone': infer(plain),
                'LoRA unmerged': infer(lora),
                'LoRA merged+unloaded': infer(merged),
            },
            args.repeats,
            args.warmup,
        )
        print(f'\n[inference] ViT-B {SIZE} px, batch {BATCH}, no grad')
        print(report(medians, 'plain backbone'))
    if 'step' in args.parts:
        medians = interleaved_median(
            {'full fine-tuning': step(full), 'LoRA only': step(lora)},
            args.repeats,
            args.warmup,
        )
        print(f'\n[training step] forward + backward, batch {BATCH}')
        print(report(medians, 'full fine-tuning'))
    total = sum(p.numel() for p in lora.parameters())
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    print(
        f'\ntrainable with LoRA only: {trainable:,} of {total:,} parameters '
        f'({trainable / total:.2%})'
    )
    if 'memory' in args.parts:
        checkpointed = copy.deepcopy(lora)
        enable_gradient_checkpointing(checkpointed, r'layers\.\d+')
        lora.train()
        checkpointed.train()
        peaks = {
            'LoRA only': peak_bytes(step(lora), 'cpu'),
            'LoRA only, checkpointed': peak_bytes(step(checkpointed), 'cpu'),
        }
        print(f'\n[peak memory] one training step, batch {BATCH}')
        for name, nbytes in peaks.items():
            print(
                f'{name:>24s}: {nbytes / 2**20:9.1f} MiB   vs LoRA only: '
                f'{nbytes / peaks["LoRA only"]:5.2f}x'
            )


if __name__ == '__main__':
    main()
