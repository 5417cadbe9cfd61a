# Copyright (c) mmvfm contributors. All rights reserved.
"""rank_local_normalizers: inside it, mmdet's set-prediction heads
normalise by their own rank's counts (no collective), so ranks training
different tasks stay in step; outside it, mmdet's reduce_mean again."""

import importlib

import torch
from conftest import run_gloo_ranks

from mmvfm.models.common import rank_local_normalizers
from mmvfm.models.common.local_normalizer import _HEAD_MODULES


def _mixed_step(rank: int, local: bool) -> list:
    """Rank 0 runs a 'detection' step: every head module's reduce_mean on
    its count (2 masks); rank 1 a step without one. Then both all-reduce a
    probe (rank + 1): with rank-local normalisers the probe is 1 + 2 = 3
    on both ranks and rank 0's counts are its own; with mmdet's
    synchronised ones rank 0's first reduce_mean pairs with rank 1's
    probe."""
    counts = []
    if rank == 0:
        with rank_local_normalizers(local):
            for name in _HEAD_MODULES:
                module = importlib.import_module(name)
                counts.append(float(module.reduce_mean(torch.tensor(2.0))))
    probe = torch.tensor(float(rank + 1))
    torch.distributed.all_reduce(probe)
    return [float(probe), *counts]


def test_ranks_in_different_tasks_stay_in_step():
    results = run_gloo_ranks(_mixed_step, True)
    assert results[0] == [3.0] + [2.0] * len(_HEAD_MODULES)
    assert results[1] == [3.0]


def test_sync_default_is_mmdets_collective():
    """``enabled=False`` leaves mmdet's reduce_mean: two ranks in the same
    step average their counts (2 and 3)."""
    results = run_gloo_ranks(_same_step)
    assert results[0] == results[1] == [3.0, 2.5]


def _same_step(rank: int) -> list:
    from mmdet.models.dense_heads import mask2former_head

    with rank_local_normalizers(False):
        count = mask2former_head.reduce_mean(torch.tensor(2.0 + rank))
    probe = torch.tensor(float(rank + 1))
    torch.distributed.all_reduce(probe)
    return [float(probe), float(count)]


def test_patch_is_undone():
    modules = [importlib.import_module(n) for n in _HEAD_MODULES]
    before = [m.reduce_mean for m in modules]
    try:
        with rank_local_normalizers():
            assert all(m.reduce_mean is not b for m, b in zip(modules, before))
            raise RuntimeError('inside')
    except RuntimeError:
        pass
    assert [m.reduce_mean for m in modules] == before
