# Copyright (c) mmvfm contributors. All rights reserved.
"""all_gather_with_grad: two gloo processes give the gradient of the sum
of both ranks' losses, as one process with the doubled batch; different
shapes are refused; without a process group it is the identity."""

import pytest
import torch
import torch.nn.functional as F
from conftest import run_gloo_ranks

from mmvfm.models.common import all_gather_with_grad


def _loss(q: torch.Tensor, k: torch.Tensor, offset: int) -> torch.Tensor:
    """InfoNCE of the local queries against all keys; the positive of
    query i is key offset + i."""
    logits = q @ k.T / 0.1
    target = torch.arange(q.shape[0]) + offset
    return F.cross_entropy(logits, target)


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)


def _worker(rank):
    """The InfoNCE step, then a gather of unequal shapes (rank 1 short)."""
    q_all, k_all = _data()
    q = q_all[2 * rank : 2 * rank + 2].clone().requires_grad_()
    k = k_all[2 * rank : 2 * rank + 2].clone().requires_grad_()
    loss = _loss(q, all_gather_with_grad(k), 2 * rank)
    loss.backward()
    try:
        all_gather_with_grad(k[:1] if rank == 1 else k)
        error = None
    except ValueError as e:
        error = str(e)
    return loss.item(), q.grad.tolist(), k.grad.tolist(), error


def test_two_ranks_equal_one_process_with_the_doubled_batch():
    """One process group for both checks (a spawn costs seconds)."""
    results = run_gloo_ranks(_worker)
    q_all, k_all = _data()
    q_all.requires_grad_()
    k_all.requires_grad_()
    total = _loss(q_all[:2], k_all, 0) + _loss(q_all[2:], k_all, 2)
    total.backward()
    for rank in (0, 1):
        loss, q_grad, k_grad, error = results[rank]
        expected = _loss(q_all[2 * rank : 2 * rank + 2], k_all, 2 * rank)
        assert loss == pytest.approx(expected.item(), rel=1e-6)
        rows = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(torch.tensor(q_grad), q_all.grad[rows])
        # the keys' gradient sums both ranks' losses
        torch.testing.assert_close(torch.tensor(k_grad), k_all.grad[rows])
        # different shapes: refused on every rank, shapes named
        assert 'every rank must give the same shape' in error
        assert '(2, 3), (1, 3)' in error


def test_identity_without_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
