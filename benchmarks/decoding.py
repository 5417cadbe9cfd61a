# Copyright (c) mmvfm contributors. All rights reserved.
"""Caption decoding: the key / value cache, and beam search vs greedy.

Fixed sizes: a :class:`CaptionHead` of width 256, 4 layers, 4 heads, a
vocabulary of 512 (the toy tokenizer's: ``tools/misc/train_tokenizer.py``'s
default), 196 visual tokens of 768 dims (a ViT-B/16 at 224 px), batch 8,
exactly 20 generated tokens per caption (``<eos>`` is made impossible, so
that no caption ends early and every variant decodes 20 steps), float32,
inference (no grad). The visual tokens' projection and cross-attention
keys / values are computed once per call in every variant.

- greedy search, uncached (every step re-runs the whole prefix: the
  baseline) vs cached (one new token per step; target >= 3x faster);
- beam search (3 beams) vs greedy, both cached: the beam's cost;
- the visual projection and cross-attention keys / values alone (done once
  per batch in every variant), to give the speed-up of the decoder steps.

Before timing, the cached and uncached paths are checked to give the same
tokens (greedy and beam).

    python benchmarks/decoding.py [--repeats 5] [--warmup 1] [--threads T]
        [--device cpu|cuda]
"""

import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    report,
    setup_device,
)

import mmvfm  # noqa: E402,F401  (registries)
from mmvfm.models.language import EOS, CaptionHead  # noqa: E402

WIDTH, DEPTH, HEADS, VOCAB = 256, 4, 4, 512
BATCH, TOKENS, VISUAL_DIMS, LENGTH, BEAMS = 8, 196, 768, 20, 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    add_device_args(parser)
    return parser.parse_args()


def build(device: str) -> CaptionHead:
    torch.manual_seed(0)
    head = CaptionHead(
        vocab_size=VOCAB,
        in_channels=VISUAL_DIMS,
        width=WIDTH,
        depth=DEPTH,
        num_heads=HEADS,
        max_length=LENGTH + 1,
    )
    with torch.no_grad():
        head.out_bias[EOS] = -1e4  # never ends early: LENGTH steps
    return head.to(device).eval()


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    head = build(device)
    visual = torch.randn(BATCH, TOKENS, VISUAL_DIMS, device=device)

    def run(use_cache: bool, mode: str = 'greedy'):
        def fn():
            return head.generate(
                visual,
                mode=mode,
                beam_size=BEAMS,
                max_length=LENGTH,
                length_penalty=0.6,
                use_cache=use_cache,
            )

        return fn

    for mode in ('greedy', 'beam'):
        cached, plain = run(True, mode)(), run(False, mode)()
        if not torch.equal(cached[0], plain[0]):
            raise SystemExit(f'{mode}: cached != uncached tokens')
        if cached[0].shape != (BATCH, LENGTH):
            raise SystemExit(f'{mode}: {tuple(cached[0].shape)} tokens')
    print(
        f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
        f'device {device}'
    )
    print(
        f'CaptionHead width {WIDTH}, {DEPTH} layers, {HEADS} heads, vocab '
        f'{VOCAB}; {TOKENS} visual tokens x {VISUAL_DIMS}; batch {BATCH}; '
        f'{LENGTH} tokens'
    )

    def memory():
        with torch.no_grad():
            return head.memory(visual)

    medians = interleaved_median(
        {
            'greedy, uncached': run(False),
            'greedy, cached': run(True),
            f'beam {BEAMS}, cached': run(True, 'beam'),
            'visual memory only': memory,
        },
        args.repeats,
        args.warmup,
        device,
    )
    print('\n[decoding] median time per batch')
    print(report(medians, 'greedy, uncached'))
    plain, greedy = medians['greedy, uncached'], medians['greedy, cached']
    beam, fixed = (
        medians[f'beam {BEAMS}, cached'],
        medians['visual memory only'],
    )
    print(
        f'\ncache speed-up (greedy): {plain / greedy:.2f}x (target >= 3x); '
        f'decoder steps only (less the visual projection and cross-attention '
        f'keys / values, computed once in both): '
        f'{(plain - fixed) / (greedy - fixed):.2f}x'
    )
    print(f'beam {BEAMS} / greedy (both cached): {beam / greedy:.2f}x time')


if __name__ == '__main__':
    main()
