# Copyright (c) mmvfm contributors. All rights reserved.
"""ContrastiveLoss: a hand-computed 2x2 batch, the temperature clamp, and
two gloo ranks equal to one process with the doubled batch (loss and
gradients of the features and of the temperature)."""

import math

import pytest
import torch
from conftest import run_gloo_ranks

from mmvfm.models.losses import ContrastiveLoss


def test_hand_computed_two_by_two():
    # cosine similarities [[1, 0.6], [0, 0.8]], scale 10
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    loss = ContrastiveLoss(init_temperature=0.1).double()
    out = loss(image, text)

    def log1pexp(x):
        return math.log1p(math.exp(x))

    i2t = (log1pexp(10 * (0.6 - 1)) + log1pexp(10 * (0 - 0.8))) / 2
    t2i = (log1pexp(10 * (0 - 1)) + log1pexp(10 * (0.6 - 0.8))) / 2
    assert out['loss_contrastive'].item() == pytest.approx((i2t + t2i) / 2)
    assert out['temperature'].item() == pytest.approx(0.1)


def test_scale_clamp_and_errors():
    loss = ContrastiveLoss(max_scale=100)
    with torch.no_grad():
        loss.logit_scale.fill_(10.0)  # e^10 > 100
    assert loss.scale.item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match='below the initial scale'):
        ContrastiveLoss(init_temperature=0.001, max_scale=100)
    with pytest.raises(ValueError, match=r'must both be \(N, D\)'):
        loss(torch.zeros(2, 3), torch.zeros(3, 3))


def _features():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)


def _worker(rank):
    image, text = _features()
    image = image[2 * rank : 2 * rank + 2].clone().requires_grad_()
    text = text[2 * rank : 2 * rank + 2].clone().requires_grad_()
    loss = ContrastiveLoss()
    out = loss(image, text)['loss_contrastive']
    out.backward()
    return (
        out.item(),
        image.grad.tolist(),
        text.grad.tolist(),
        loss.logit_scale.grad.item(),
    )


def test_two_ranks_equal_the_doubled_batch():
    results = run_gloo_ranks(_worker)
    image, text = _features()
    image.requires_grad_()
    text.requires_grad_()
    loss = ContrastiveLoss()
    # what the two ranks compute, in one process: each half's queries
    # against all keys; the features' gradients sum both ranks' losses,
    # the temperature's is averaged (as DDP does for parameters)
    local = [_half_loss(loss, image, text, rank) for rank in (0, 1)]
    sum(local).backward()
    mean_scale_grad = loss.logit_scale.grad.item() / 2
    for rank in (0, 1):
        value, g_image, g_text, g_scale = results[rank]
        assert value == pytest.approx(local[rank].item(), rel=1e-6)
        rows = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(torch.tensor(g_image), image.grad[rows])
        torch.testing.assert_close(torch.tensor(g_text), text.grad[rows])
    # DDP's average of the two ranks' temperature gradients
    avg = (results[0][3] + results[1][3]) / 2
    assert avg == pytest.approx(mean_scale_grad, rel=1e-5)
    # and the loss of the doubled batch is the mean of the ranks' losses
    full = ContrastiveLoss(gather=False)(image, text)['loss_contrastive']
    assert full.item() == pytest.approx(
        (results[0][0] + results[1][0]) / 2, rel=1e-6
    )


def _half_loss(loss, image, text, rank):
    import torch.nn.functional as F

    i = F.normalize(image, dim=-1)
    t = F.normalize(text, dim=-1)
    rows = slice(2 * rank, 2 * rank + 2)
    target = torch.arange(2) + 2 * rank
    s = loss.scale
    i2t = F.cross_entropy(s * i[rows] @ t.T, target)
    t2i = F.cross_entropy(s * t[rows] @ i.T, target)
    return (i2t + t2i) / 2
