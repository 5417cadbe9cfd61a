# Copyright (c) mmvfm contributors. All rights reserved.
"""all_gather_with_grad: two gloo processes give the gradient of the sum
of both ranks' losses, as one process with the doubled batch; different
shapes are refused; without a process group it is the identity."""

import multiprocessing as mp
import os
import socket
import traceback

import pytest
import torch
import torch.nn.functional as F

from mmvfm.models.utils import all_gather_with_grad


def _loss(q: torch.Tensor, k: torch.Tensor, offset: int) -> torch.Tensor:
    """InfoNCE of the local queries against all keys; the positive of
    query i is key offset + i."""
    logits = q @ k.T / 0.1
    target = torch.arange(q.shape[0]) + offset
    return F.cross_entropy(logits, target)


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)


def _worker(rank, port, queue, bad_shape):
    try:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
        q_all, k_all = _data()
        q = q_all[2 * rank : 2 * rank + 2].clone().requires_grad_()
        k = k_all[2 * rank : 2 * rank + 2].clone().requires_grad_()
        if bad_shape and rank == 1:
            k = k[:1]
        try:
            keys = all_gather_with_grad(k)
        except ValueError as e:
            queue.put((rank, 'error', str(e)))
            return
        loss = _loss(q, keys, 2 * rank)
        loss.backward()
        # plain lists: tensors in a queue outlive the child's shared memory
        queue.put(
            (rank, 'ok', (loss.item(), q.grad.tolist(), k.grad.tolist()))
        )
    except Exception:
        queue.put((rank, 'crash', traceback.format_exc()))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(bad_shape=False):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, port, queue, bad_shape))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    results = dict(
        (r, (kind, v))
        for r, kind, v in (queue.get(timeout=120) for _ in procs)
    )
    for p in procs:
        p.join(timeout=60)
    for kind, value in results.values():
        assert kind != 'crash', value
    return results


def test_two_ranks_equal_one_process_with_the_doubled_batch():
    results = _run()
    q_all, k_all = _data()
    q_all.requires_grad_()
    k_all.requires_grad_()
    total = _loss(q_all[:2], k_all, 0) + _loss(q_all[2:], k_all, 2)
    total.backward()
    for rank in (0, 1):
        kind, (loss, q_grad, k_grad) = results[rank]
        assert kind == 'ok'
        expected = _loss(q_all[2 * rank : 2 * rank + 2], k_all, 2 * rank)
        assert loss == pytest.approx(expected.item(), rel=1e-6)
        rows = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(torch.tensor(q_grad), q_all.grad[rows])
        # the keys' gradient sums both ranks' losses
        torch.testing.assert_close(torch.tensor(k_grad), k_all.grad[rows])


def test_different_shapes_are_refused():
    results = _run(bad_shape=True)
    for rank in (0, 1):
        kind, message = results[rank]
        assert kind == 'error'
        assert 'every rank must give the same shape' in message
        assert '(2, 3), (1, 3)' in message


def test_identity_without_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
