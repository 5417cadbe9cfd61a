# Copyright (c) mmvfm contributors. All rights reserved.
"""What the text side costs: a CLIP training step vs a classification step
of the same ViT.

Fixed sizes: the toy CLIP config
(``configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py``): the ViT
(192-d, 6 blocks, patch 8) at 64 px, batch 32, the text encoder at its
config size (128-d, 3 causal layers, max 40 tokens), captions of 8-16
words from the toy vocabulary (tokenised in the step, as in training).

- classification step (the baseline): the ViT, mean pooling, a linear
  5-class head, cross-entropy; forward, backward, AdamW step;
- contrastive step: the ``CLIP`` model's loss (one caption per image,
  tokenised, text encoder, symmetric InfoNCE); forward, backward, AdamW
  step. Target: <= 1.3x the classification step.

    python benchmarks/clip_step.py [--repeats 10] [--threads 2]
"""

import argparse
import os.path as osp
import random
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import (  # noqa: E402
    add_device_args,
    interleaved_median,
    report,
    setup_device,
)
from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.structures import BaseDataElement  # noqa: E402

import mmvfm  # noqa: E402,F401  (registries)
from mmvfm.models.language import train_bpe  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(
    ROOT, 'configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py'
)
WORDS = (
    'a an the large small tiny red green blue yellow circle square '
    'triangle ring cross at top bottom left right middle of image on '
    'textured background next to along with two three shapes'
).split()


def captions(n: int, rng: random.Random):
    return [
        ' '.join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
        for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    add_device_args(parser)
    args = parser.parse_args()
    device = setup_device(args)
    cfg = Config.fromfile(CONFIG)
    batch = cfg.train_dataloader.batch_size
    size = cfg.img_size
    rng = random.Random(0)
    tmp = tempfile.mkdtemp()
    tok = osp.join(tmp, 'bpe.json')
    train_bpe(captions(2000, rng), tok, vocab_size=cfg.vocab_size)
    model_cfg = cfg.model.copy()
    model_cfg.pop('data_preprocessor')
    model_cfg.tokenizer.file = tok
    torch.manual_seed(0)
    clip = MODELS.build(model_cfg).to(device).train()
    vit = MODELS.build(cfg.model.image_encoder).to(device)
    vit.train()
    head = nn.Linear(vit.embed_dims, 5).to(device)
    opt_clip = torch.optim.AdamW(clip.parameters(), lr=1e-4)
    opt_cls = torch.optim.AdamW(
        list(vit.parameters()) + list(head.parameters()), lr=1e-4
    )
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(5, (batch,), device=device)
    samples = []
    for cap in captions(batch, rng):
        s = BaseDataElement()
        s.set_field([cap], 'gt_caption')
        samples.append(s)

    def cls_step():
        opt_cls.zero_grad()
        feat = vit(images)[-1].mean((2, 3))
        F.cross_entropy(head(feat), labels).backward()
        opt_cls.step()

    def clip_step():
        opt_clip.zero_grad()
        clip.loss(images, samples)['loss_contrastive'].backward()
        opt_clip.step()

    n_vit = sum(p.numel() for p in vit.parameters())
    n_text = sum(p.numel() for p in clip.text_encoder.parameters())
    print(
        f'batch {batch}, {size} px; ViT {n_vit / 1e6:.2f} M params, text '
        f'encoder {n_text / 1e6:.2f} M params'
    )
    medians = interleaved_median(
        {'classification step': cls_step, 'contrastive step': clip_step},
        repeats=args.repeats,
        warmup=args.warmup,
        device=device,
    )
    print(report(medians, 'classification step'))
    ratio = medians['contrastive step'] / medians['classification step']
    print(f'contrastive / classification step: {ratio:.2f}x (target <= 1.3x)')


if __name__ == '__main__':
    main()
