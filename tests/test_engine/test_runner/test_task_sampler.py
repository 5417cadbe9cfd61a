# Copyright (c) mmvfm contributors. All rights reserved.
import math

import numpy as np
import pytest

from mmvfm.engine.runner import TaskSampler
from mmvfm.engine.runner.task_sampler import uniform_hash

RATIOS = dict(caption=0.4, segmentation=0.3, detection=0.3)


def test_ratios_respected_within_a_stated_bound():
    """Over n draws each task's frequency lies within 5 binomial standard
    deviations of its ratio (for n=50000: +-0.0110 for p=0.4); a biased
    sampler (e.g. uniform over tasks) would miss by 0.07."""
    n = 50000
    for strategy, rank in (('unmixed', 0), ('mixed', 0), ('mixed', 3)):
        sampler = TaskSampler(RATIOS, strategy, seed=7)
        counts = sampler.counts(n, rank)
        assert sum(counts.values()) == n
        for task, p in RATIOS.items():
            bound = 5 * math.sqrt(p * (1 - p) / n)
            assert abs(counts[task] / n - p) < bound, (strategy, task)


def test_uniform_hash_is_uniform_and_deterministic():
    u = uniform_hash(3, np.arange(100000), 0)
    assert 0.0 <= u.min() and u.max() < 1.0
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / len(u)
    assert np.all(np.abs(hist - 0.1) < 0.005)
    np.testing.assert_array_equal(u, uniform_hash(3, np.arange(100000), 0))
    assert not np.array_equal(u, uniform_hash(4, np.arange(100000), 0))


def test_unmixed_same_task_on_every_rank_mixed_not():
    unmixed = TaskSampler(RATIOS, 'unmixed', seed=1)
    mixed = TaskSampler(RATIOS, 'mixed', seed=1)
    iters = range(200)
    for i in iters:
        assert len({unmixed.task_at(i, r) for r in range(4)}) == 1
    differ = sum(mixed.task_at(i, 0) != mixed.task_at(i, 1) for i in iters)
    # P(differ) = 1 - sum p^2 = 0.66 per iteration
    assert 90 < differ < 175


def test_deterministic_and_resumable():
    a = TaskSampler(RATIOS, 'mixed', seed=5)
    b = TaskSampler(RATIOS, 'mixed', seed=5)
    seq = [a.task_at(i, 1) for i in range(300)]
    assert seq == [b.task_at(i, 1) for i in range(300)]
    # counts up to k equal the counts of the sequence prefix
    k = 137
    expected = {t: seq[:k].count(t) for t in RATIOS}
    assert a.counts(k, 1) == expected
    assert seq != [
        TaskSampler(RATIOS, 'mixed', seed=6).task_at(i, 1) for i in range(300)
    ]


@pytest.mark.parametrize(
    'kwargs,match',
    [
        (dict(ratios={}), 'at least one task'),
        (dict(ratios=dict(a=0.5, b=0)), 'task_ratios.b must be > 0'),
        (dict(ratios=dict(a=1), strategy='random'), 'strategy must be one of'),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSampler(**kwargs)


def test_draws_do_not_depend_on_the_dict_order():
    """A config dumped by mmengine sorts its keys: the task sequence of the
    dumped config must be the one of the original."""
    a = TaskSampler(dict(det=0.3, cls=0.7), 'mixed', seed=1)
    b = TaskSampler(dict(cls=0.7, det=0.3), 'mixed', seed=1)
    for rank in (0, 1):
        assert [a.task_at(i, rank) for i in range(200)] == [
            b.task_at(i, rank) for i in range(200)
        ]
