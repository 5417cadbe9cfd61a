# Copyright (c) mmvfm contributors. All rights reserved.
import itertools

import pytest

from mmvfm.datasets.samplers import ResumableInfiniteSampler


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_pass_is_a_permutation_and_passes_differ():
    sampler = ResumableInfiniteSampler(list(range(10)), seed=3)
    stream = take(sampler, 30)
    for k in range(3):
        assert sorted(stream[10 * k : 10 * (k + 1)]) == list(range(10))
    assert stream[:10] != stream[10:20]


@pytest.mark.parametrize('consumed', [0, 1, 9, 10, 11, 23])
def test_set_consumed_continues_the_same_stream(consumed):
    sampler = ResumableInfiniteSampler(list(range(10)), seed=3)
    full = take(sampler, 40)
    sampler.set_consumed(consumed)
    assert take(sampler, 40 - consumed) == full[consumed:]


def test_ranks_share_each_pass_and_resume_per_rank(monkeypatch):
    import mmvfm.datasets.samplers.resumable_infinite_sampler as mod

    data = list(range(7))
    streams = []
    for rank in (0, 1):
        monkeypatch.setattr(mod, 'get_dist_info', lambda r=rank: (r, 2))
        sampler = ResumableInfiniteSampler(data, seed=1)
        streams.append(take(sampler, 14))
        sampler.set_consumed(5)
        assert take(sampler, 9) == streams[-1][5:]
    # interleaving the two ranks gives the global stream: two passes
    merged = [x for pair in zip(*streams) for x in pair]
    assert sorted(merged[:7]) == data and sorted(merged[7:14]) == data


def test_no_shuffle_and_errors():
    sampler = ResumableInfiniteSampler(list(range(4)), shuffle=False, seed=0)
    assert take(sampler, 6) == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError, match='consumed must be >= 0'):
        sampler.set_consumed(-1)
    with pytest.raises(ValueError, match='empty'):
        ResumableInfiniteSampler([], seed=0)
