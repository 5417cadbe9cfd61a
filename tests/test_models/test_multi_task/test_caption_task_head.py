# Copyright (c) mmvfm contributors. All rights reserved.
"""CaptionTaskHead in a MultiTaskModel on a tiny ViT: toy captions through
the dataset and pipeline, a loss that trains, predictions as strings for
CaptionMetric, random references drawn with torch's generator, channel
mismatches caught at build time."""

import copy

import pytest
import torch
from conftest import TINY_VIT
from mmdet.registry import DATASETS, METRICS, MODELS
from mmengine.dataset import pseudo_collate

from mmvfm.models.language import coco_captions, train_bpe

pytestmark = [
    pytest.mark.usefixtures('one_thread'),
    # the tiny set's tokenizer has few merges: long captions are truncated
    pytest.mark.filterwarnings('ignore:BPETokenizer.*truncated'),
]


@pytest.fixture(scope='module')
def tokenizer_file(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tok') / 'bpe.json')
    size = train_bpe(
        coco_captions(f'{toy_root}/annotations/captions_train.json'),
        out,
        vocab_size=300,
    )
    return out, size


def _model_cfg(path, size, in_channels=32):
    return dict(
        type='MultiTaskModel',
        data_preprocessor=dict(
            type='MultiTaskDataPreprocessor',
            preprocessors=dict(
                caption=dict(
                    type='mmpretrain.ClsDataPreprocessor',
                    mean=[127.5] * 3,
                    std=[127.5] * 3,
                    to_rgb=True,
                    pad_size_divisor=8,
                )
            ),
        ),
        backbone=dict(
            copy.deepcopy(TINY_VIT), out_type='featmap', with_cls_token=False
        ),
        tasks=dict(
            caption=dict(
                type='CaptionTaskHead',
                head=dict(
                    type='CaptionHead',
                    vocab_size=size,
                    in_channels=in_channels,
                    width=32,
                    depth=1,
                    num_heads=2,
                    max_length=48,
                    tokenizer=dict(type='BPETokenizer', file=path),
                    decode_cfg=dict(max_length=8),
                ),
            )
        ),
    )


def _batch(toy_root, n=4):
    dataset = DATASETS.build(
        dict(
            type='CocoImageCaptionsDataset',
            data_root=toy_root,
            ann_file='annotations/captions_train.json',
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(32, 32), keep_ratio=False),
                dict(
                    type='mmpretrain.PackInputs',
                    algorithm_keys=['gt_caption'],
                    meta_keys=['img_id'],
                ),
            ],
        )
    )
    return dict(pseudo_collate([dataset[i] for i in range(n)]), task='caption')


def test_loss_and_predict_in_a_multi_task_model(tokenizer_file, toy_root):
    path, size = tokenizer_file
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(path, size))
    model.init_weights()
    batch = model.data_preprocessor(_batch(toy_root), True)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(1)
    first = model(**batch, mode='loss')
    assert set(first) == {'caption.loss_caption', 'caption.acc_caption'}
    assert torch.isfinite(first['caption.loss_caption'])
    first['caption.loss_caption'].backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    assert any(p.grad is not None for p in model.backbone.parameters())
    for _ in range(5):
        torch.manual_seed(1)  # the same references every step
        loss = model(**batch, mode='loss')['caption.loss_caption']
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < first['caption.loss_caption'].item()

    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(_batch(toy_root))
        samples = model(**batch, mode='predict')
    assert len(samples) == 4
    assert all(isinstance(s.pred_caption, str) for s in samples)
    metric = METRICS.build(dict(type='CaptionMetric'))
    metric.process(None, samples)
    assert set(metric.evaluate(4)) >= {'caption/BLEU-4', 'caption/CIDEr-D'}
    with torch.no_grad():
        ids = model(**batch, mode='tensor')
    assert ids.dtype == torch.long and ids.shape[0] == 4
    assert ids.shape[1] <= 8


def test_references_drawn_at_random_with_torch(tokenizer_file, toy_root):
    path, size = tokenizer_file
    model = MODELS.build(_model_cfg(path, size))
    head = model.heads.caption
    drawn = []
    encode = head.head.encode

    def record(captions, device=None):
        drawn.append(list(captions))
        return encode(captions, device)

    head.head.encode = record
    batch = model.data_preprocessor(_batch(toy_root, n=2), True)
    refs = [s.gt_caption for s in batch['data_samples']]
    for seed in (0, 0, 1, 2, 3, 4):
        torch.manual_seed(seed)
        model(**batch, mode='loss')
    assert drawn[0] == drawn[1]  # seeded through torch
    for i, sample_refs in enumerate(refs):
        picked = {d[i] for d in drawn}
        assert picked <= set(sample_refs) and len(picked) > 1


def test_channel_mismatch_fails_at_build_and_bad_samples(
    tokenizer_file, toy_root, tmp_path
):
    path, size = tokenizer_file
    with pytest.raises(ValueError, match=r'tasks\.caption: .*in_channels is'):
        MODELS.build(_model_cfg(path, size, in_channels=48))
    # the tokenizer file is needed at run time only
    model = MODELS.build(_model_cfg(str(tmp_path / 'none.json'), size))
    batch = model.data_preprocessor(_batch(toy_root, n=2), True)
    with pytest.raises(FileNotFoundError, match='none.json" does not exist'):
        model(**batch, mode='loss')
    for sample in batch['data_samples']:
        del sample.gt_caption
    with pytest.raises(ValueError, match='has no `gt_caption`'):
        model(**batch, mode='loss')
