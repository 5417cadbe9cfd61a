# Copyright (c) mmvfm contributors. All rights reserved.
"""TextTransformer: causal masking, padding never reaches real tokens, the
pooled feature is taken where the pool says, bad ids / lengths refused."""

import pytest
import torch

from mmvfm.models.language import BOS, EOS, PAD, TextTransformer

pytestmark = pytest.mark.usefixtures('one_thread')


def _ids():
    # two texts: <bos> 7 8 9 <eos> and <bos> 7 <eos> <pad> <pad>
    return torch.tensor(
        [[BOS, 7, 8, 9, EOS], [BOS, 7, EOS, PAD, PAD]], dtype=torch.long
    )


def _model(**kw):
    torch.manual_seed(0)
    return TextTransformer(
        vocab_size=20, width=16, depth=2, num_heads=2, max_length=8, **kw
    ).eval()


def test_causal_prefix_does_not_see_later_tokens():
    model = _model(causal=True)
    ids = _ids()
    changed = ids.clone()
    changed[0, 3] = 11  # a later token of text 0
    x, _ = model(ids)
    y, _ = model(changed)
    torch.testing.assert_close(x[0, :3], y[0, :3])
    assert not torch.allclose(x[0, 3:], y[0, 3:])


def test_bidirectional_sees_everything():
    model = _model(causal=False, pool='bos')
    ids = _ids()
    changed = ids.clone()
    changed[0, 3] = 11
    x, pooled = model(ids)
    y, pooled2 = model(changed)
    assert not torch.allclose(x[0, 0], y[0, 0])
    torch.testing.assert_close(pooled, x[:, 0])


@pytest.mark.parametrize('causal', [True, False])
def test_padding_never_reaches_real_tokens(causal):
    model = _model(causal=causal, pool='mean')
    ids = _ids()
    more_pad = torch.cat([ids, torch.zeros(2, 2, dtype=torch.long)], 1)
    x, pooled = model(ids)
    y, pooled2 = model(more_pad)
    torch.testing.assert_close(x[1, :3], y[1, :3])
    torch.testing.assert_close(pooled, pooled2)


def test_eos_pool_and_projection():
    model = _model(causal=True, pool='eos', proj_dims=6)
    x, pooled = model(_ids())
    assert pooled.shape == (2, 6)
    expected = torch.stack([x[0, 4], x[1, 2]]) @ model.proj.weight.T
    torch.testing.assert_close(pooled, expected)


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match='token id 25 >= vocab_size 20'):
        model(torch.tensor([[BOS, 25, EOS]]))
    with pytest.raises(ValueError, match='9 tokens, max_length is 8'):
        model(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match='pool must be one of'):
        _model(pool='cls')
