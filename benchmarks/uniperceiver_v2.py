# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's costs: the task-agnostic decoder vs token count, and
the retrieval gather in a 2-process CPU step.

- ``--part decoder``: one forward + backward of ``TaskAgnosticDecoder``
  (``--dims``, ``--depth``; the toy config's 128-d / 2 layers by default,
  the paper's 768-d / 6 layers with ``--dims 768 --depth 6 --heads 12``)
  on a batch of ``--batch`` sequences of 32 ... 512 tokens; the time per
  token against the shortest shows where attention's quadratic term takes
  over from the linear layers.
- ``--part gather``: the toy config's model (configs/uniperceiver_v2), two
  gloo processes of ``--batch`` pairs each, one retrieval training step
  (loss, backward, the DDP-style gradient all-reduce) with the candidates
  gathered across the ranks (``gather=True``, the config) and without
  (each rank's own batch), interleaved; target: the gather adds < 10 % to
  the step.
- ``--part proposals``: the five-task toy config's model, one detection
  training step (batch ``--batch`` = 8 at 128 px, 1-4 box-shaped instances
  per image) split by what it runs, interleaved: the backbone alone
  (forward + backward of its map), backbone + proposal stage (Mask2Former's
  losses), and the whole step (+ proposal tokens, decoder, class-name
  candidates, the matched-proposal NLL); the proposal stage's share is
  (backbone + stage - backbone) / whole.

    python benchmarks/uniperceiver_v2.py --part decoder [--threads 1]
    python benchmarks/uniperceiver_v2.py --part gather [--batch 32]
    python benchmarks/uniperceiver_v2.py --part proposals [--batch 8]
"""

import argparse
import os
import os.path as osp
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from common import interleaved_median  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(
    ROOT,
    'configs/uniperceiver_v2/'
    'uniperceiver-v2_vit-t8_cls-cap-ret_1xb32-1200i_toy-coco.py',
)
FIVE_TASKS = osp.join(
    ROOT,
    'configs/uniperceiver_v2/'
    'uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py',
)
WORDS = (
    'a an the large small tiny red green blue yellow circle square '
    'triangle ring cross at top bottom left right middle of image'
).split()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--part', choices=('decoder', 'gather', 'proposals'), required=True
    )
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--batch', type=int, default=None)
    parser.add_argument('--dims', type=int, default=128)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--heads', type=int, default=4)
    return parser.parse_args(argv)


def bench_decoder(args) -> None:
    from mmvfm.models.uniperceiver import TaskAgnosticDecoder

    torch.manual_seed(0)
    dec = TaskAgnosticDecoder(args.dims, args.depth, args.heads)
    batch = args.batch or 8
    fns = {}
    for tokens in (32, 64, 128, 256, 512):
        x = torch.randn(batch, tokens, args.dims, requires_grad=True)
        modality = torch.ones(tokens, dtype=torch.long)

        def step(x=x, modality=modality):
            dec.zero_grad(set_to_none=True)
            dec(x, modality)[:, 0].sum().backward()

        fns[f'{tokens} tokens'] = step
    medians = interleaved_median(fns, repeats=args.repeats)
    print(
        f'TaskAgnosticDecoder dims={args.dims} depth={args.depth} '
        f'heads={args.heads}, batch {batch}, fwd+bwd, '
        f'threads={torch.get_num_threads()}'
    )
    base = medians['32 tokens'] / 32
    for name, t in medians.items():
        n = int(name.split()[0])
        print(
            f'{name:>11s}: {t * 1e3:8.2f} ms   per token '
            f'{t / n * 1e6:7.1f} us = {t / n / base:4.2f}x the 32-token one'
        )


def _captions(n: int, seed: int):
    import random

    rng = random.Random(seed)
    return [
        ' '.join(rng.choice(WORDS) for _ in range(rng.randint(8, 16)))
        for _ in range(n)
    ]


def _gather_rank(rank, port, tokenizer, batch, repeats, threads, queue):
    import torch.distributed as dist
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.structures import BaseDataElement

    import mmvfm  # noqa: F401
    from mmvfm.utils import register_all_modules

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    register_all_modules()
    cfg = Config.fromfile(CONFIG)
    cfg.model.tokenizer.file = tokenizer
    cfg.model.pop('data_preprocessor')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    images = torch.randn(batch, 3, 64, 64)
    samples = []
    for cap in _captions(batch, rank):
        s = BaseDataElement()
        s.set_field([cap], 'gt_caption')
        samples.append(s)

    def step(gather: bool):
        model.task_cfgs['retrieval']['gather'] = gather
        model.zero_grad(set_to_none=True)
        loss = model.loss(images, samples, 'retrieval')['retrieval.loss']
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)  # what DDP does with the gradients

    times = {True: [], False: []}
    for i in range(repeats + 2):
        for gather in (True, False):
            dist.barrier()
            start = time.perf_counter()
            step(gather)
            dist.barrier()
            if i >= 2:
                times[gather].append(time.perf_counter() - start)
    if rank == 0:
        queue.put({k: statistics.median(v) for k, v in times.items()})
    dist.destroy_process_group()


def bench_gather(args) -> None:
    from mmvfm.models.language import train_bpe

    batch = args.batch or 32
    tmp = tempfile.mkdtemp()
    tokenizer = osp.join(tmp, 'bpe.json')
    train_bpe(_captions(2000, 0), tokenizer, vocab_size=512)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_gather_rank,
            args=(
                r,
                port,
                tokenizer,
                batch,
                args.repeats,
                args.threads,
                queue,
            ),
        )
        for r in range(2)
    ]
    for p in procs:
        p.start()
    result = queue.get(timeout=1800)
    for p in procs:
        p.join()
    with_gather, without = result[True], result[False]
    print(
        f'retrieval step, 2 gloo processes x {batch} pairs, '
        f'{args.threads} thread(s) each (loss, backward, gradient '
        'all-reduce), medians:'
    )
    print(f'  gather=False (own batch): {without * 1e3:8.1f} ms')
    print(f'  gather=True  (global)   : {with_gather * 1e3:8.1f} ms')
    print(
        f'  gather overhead: {100 * (with_gather / without - 1):+.1f} % '
        '(target < 10 %)'
    )


def _det_samples(batch: int, size: int, seed: int):
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(batch):
        n = int(rng.integers(1, 5))
        masks = np.zeros((n, size, size), dtype=np.uint8)
        boxes = []
        for m in masks:
            w, h = rng.integers(16, 64, size=2)
            x, y = rng.integers(0, size - 64, size=2)
            m[y : y + h, x : x + w] = 1
            boxes.append([x, y, x + w, y + h])
        s = DetDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                batch_input_shape=(size, size),
                pad_shape=(size, size),
            )
        )
        s.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.from_numpy(rng.integers(0, 5, size=n)),
            masks=BitmapMasks(masks, size, size),
        )
        samples.append(s)
    return samples


def bench_proposals(args) -> None:
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from mmvfm.models.language import train_bpe
    from mmvfm.utils import register_all_modules

    register_all_modules()
    batch, size = args.batch or 8, 128
    tokenizer = osp.join(tempfile.mkdtemp(), 'bpe.json')
    train_bpe(_captions(2000, 0), tokenizer, vocab_size=512)
    cfg = Config.fromfile(FIVE_TASKS)
    cfg.model.tokenizer.file = tokenizer
    cfg.model.pop('data_preprocessor')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    images = torch.randn(batch, 3, size, size)
    samples = _det_samples(batch, size, 0)

    def backbone():
        model.zero_grad(set_to_none=True)
        model.backbone_maps(images)[-1].mean().backward()

    def stage():
        model.zero_grad(set_to_none=True)
        maps = model.backbone_maps(images)
        out = model.proposer(maps, samples)
        losses, _ = model.proposer.loss(out, samples)
        sum(losses.values()).backward()

    def whole():
        model.zero_grad(set_to_none=True)
        losses = model.loss(images, samples, 'detection')
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    t = interleaved_median(
        dict(backbone=backbone, stage=stage, whole=whole),
        repeats=args.repeats,
    )
    share = (t['stage'] - t['backbone']) / t['whole']
    rest = (t['whole'] - t['stage']) / t['whole']
    print(
        f'detection training step of the five-task toy model, batch {batch} '
        f'x {size} px, {torch.get_num_threads()} thread(s), medians:'
    )
    print(f'  backbone (ViT) fwd+bwd          : {t["backbone"] * 1e3:8.1f} ms')
    print(f'  + proposal stage and its losses : {t["stage"] * 1e3:8.1f} ms')
    print(f'  whole step                      : {t["whole"] * 1e3:8.1f} ms')
    print(
        f'  proposal stage share of the step: {100 * share:.1f} %; '
        f'tokens + decoder + class objective: {100 * rest:.1f} %'
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.part == 'decoder':
        bench_decoder(args)
    elif args.part == 'proposals':
        bench_proposals(args)
    else:
        bench_gather(args)


if __name__ == '__main__':
    main()
