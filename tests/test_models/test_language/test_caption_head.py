# Copyright (c) mmvfm contributors. All rights reserved.
"""CaptionHead: teacher-forcing loss (overfits two captions, ignores
padding, label smoothing as F.cross_entropy's), the tokenizer built lazily
(a model builds on the meta device without its file; a missing file fails
at run time naming it), config checks."""

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

from mmvfm.models.language import (
    BOS,
    EOS,
    PAD,
    CaptionHead,
    coco_captions,
    train_bpe,
)

pytestmark = pytest.mark.usefixtures('one_thread')

CAPTIONS = [
    'a small red circle at the top left',
    'two large blue squares in the center of the image',
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


def _cfg(vocab_size, file=None, **kwargs):
    cfg = dict(
        type='CaptionHead',
        vocab_size=vocab_size,
        in_channels=16,
        width=64,
        depth=2,
        num_heads=4,
        max_length=40,
    )
    if file is not None:
        cfg['tokenizer'] = dict(type='BPETokenizer', file=file)
    cfg.update(kwargs)
    return cfg


def test_overfits_two_captions(tokenizer_file):
    path, size = tokenizer_file
    torch.manual_seed(0)
    head = MODELS.build(_cfg(size, path))
    visual = torch.randn(2, 4, 16)
    ids, mask = head.encode(CAPTIONS)
    assert ids[0, 0] == BOS and (ids[~mask] == PAD).all()
    optim = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    head.train()
    for _ in range(60):
        out = head.loss(visual, ids, mask)
        optim.zero_grad()
        out['loss_caption'].backward()
        optim.step()
        losses.append(out['loss_caption'].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.05 * losses[0], losses
    assert float(out['acc_caption']) == 1.0
    head.eval()
    assert head.predict_captions(visual) == CAPTIONS
    assert head.predict_captions(visual, mode='beam', beam_size=2) == CAPTIONS


def test_padding_is_ignored():
    torch.manual_seed(0)
    head = CaptionHead(
        vocab_size=50,
        in_channels=16,
        width=32,
        depth=2,
        num_heads=4,
        max_length=16,
    )
    visual = torch.randn(3, 5, 16)
    ids = torch.tensor(
        [
            [BOS, 10, 11, 12, EOS, PAD, PAD],
            [BOS, 13, EOS, PAD, PAD, PAD, PAD],
            [BOS, 20, 21, 22, 23, 24, EOS],
        ]
    )
    mask = ids != PAD
    loss = head.loss(visual, ids)['loss_caption']
    # more padding columns
    longer = F.pad(ids, (0, 4), value=PAD)
    torch.testing.assert_close(head.loss(visual, longer)['loss_caption'], loss)
    # anything at the padded positions, given the mask
    garbage = torch.where(mask, ids, torch.randint(6, 50, ids.shape))
    assert not torch.equal(garbage, ids)
    torch.testing.assert_close(
        head.loss(visual, garbage, mask)['loss_caption'], loss
    )
    # the loss is the mean cross-entropy over the real target tokens
    logits = head(visual, ids[:, :-1])
    expected = F.cross_entropy(
        logits.transpose(1, 2), ids[:, 1:], ignore_index=PAD
    )
    torch.testing.assert_close(loss, expected)


def test_label_smoothing_is_cross_entropys():
    torch.manual_seed(0)
    head = CaptionHead(
        vocab_size=50,
        in_channels=16,
        width=32,
        depth=1,
        num_heads=4,
        label_smoothing=0.1,
    )
    visual = torch.randn(2, 3, 16)
    ids = torch.tensor([[BOS, 10, 11, EOS, PAD], [BOS, 7, 8, 9, EOS]])
    logits = head(visual, ids[:, :-1])
    expected = F.cross_entropy(
        logits.transpose(1, 2),
        ids[:, 1:],
        ignore_index=PAD,
        label_smoothing=0.1,
    )
    torch.testing.assert_close(
        head.loss(visual, ids)['loss_caption'], expected
    )


def test_builds_on_meta_without_the_tokenizer_file(tmp_path):
    missing = str(tmp_path / 'missing.json')
    with torch.device('meta'):
        head = MODELS.build(_cfg(475, missing))
    assert all(p.is_meta for p in head.parameters())
    assert head.tokenizer_cfg['vocab_size'] == 475
    assert head.tokenizer_cfg['max_length'] == 40


def test_missing_tokenizer_file_fails_at_run_time_naming_it(tmp_path):
    missing = str(tmp_path / 'missing.json')
    head = MODELS.build(_cfg(300, missing))  # builds
    with pytest.raises(FileNotFoundError, match='missing.json" does not'):
        head.encode(['a red circle'])
    with pytest.raises(FileNotFoundError, match='missing.json'):
        head.predict_captions(torch.randn(1, 2, 16), max_length=2)
    no_tokenizer = MODELS.build(_cfg(300))
    with pytest.raises(RuntimeError, match='no tokenizer config'):
        no_tokenizer.encode(['a'])


def test_a_tokenizer_of_another_size_is_refused(tokenizer_file, tmp_path):
    path, size = tokenizer_file
    with pytest.raises(ValueError, match='tokenizer.vocab_size=301'):
        MODELS.build(
            _cfg(
                size,
                tokenizer=dict(type='BPETokenizer', file=path, vocab_size=301),
            )
        )
    head = MODELS.build(_cfg(size + 1, path))
    with pytest.raises(ValueError, match=f'has {size} tokens, the config'):
        head.encode(['a'])


def test_config_errors():
    with pytest.raises(ValueError, match='multiple of num_heads'):
        CaptionHead(vocab_size=50, in_channels=8, width=30, num_heads=4)
    with pytest.raises(ValueError, match=r'must be in \[1, 15\]'):
        CaptionHead(
            vocab_size=50,
            in_channels=8,
            width=32,
            max_length=16,
            decode_cfg=dict(max_length=16),
        )
    with pytest.raises(KeyError, match='unknown keys'):
        CaptionHead(vocab_size=50, in_channels=8, decode_cfg=dict(beams=2))
    head = CaptionHead(vocab_size=50, in_channels=8, width=32, depth=1)
    with pytest.raises(ValueError, match='have 4 channels, in_channels is 8'):
        head(torch.randn(1, 2, 4), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match='mode must be one of'):
        head.generate(torch.randn(1, 2, 8), mode='sample')
    with pytest.raises(ValueError, match='token id 60 >= vocab_size 50'):
        head(torch.randn(1, 2, 8), torch.tensor([[BOS, 60]]))
