# Copyright (c) mmvfm contributors. All rights reserved.
"""Greedy and beam search over step functions: beam search is exhaustive
search when the beam holds every prefix, greedy is a beam of one, the
cached path is the uncached one (for a fixed table and for CaptionHead in
float64), EOS ends and pads, and caches reorder as nested structures."""

import itertools
from collections import namedtuple

import pytest
import torch

from mmvfm.models.language import (
    CaptionHead,
    beam_search,
    expand_cache,
    gnmt_length_penalty,
    greedy_search,
    map_cache,
    reorder_cache,
)

pytestmark = pytest.mark.usefixtures('one_thread')

PAD, BOS, EOS = 0, 1, 2


class Table:
    """Fixed random log-probs of the next token given (element, prefix):
    ``<pad>`` and ``<bos>`` never come next; ``<eos>`` grows likelier
    with the length by ``eos_bias`` per token."""

    def __init__(self, V: int, seed: int = 0, eos_bias: float = 0.3):
        self.V, self.seed, self.eos_bias = V, seed, eos_bias
        self.memo = {}
        self.calls = 0

    def __call__(self, element: int, prefix: tuple) -> torch.Tensor:
        key = (self.seed, element, *prefix)
        if key not in self.memo:
            gen = torch.Generator().manual_seed(hash(key) % 2**31)
            x = 2 * torch.randn(self.V, generator=gen, dtype=torch.float64)
            x[EOS] += self.eos_bias * len(prefix)
            x[PAD] = x[BOS] = float('-inf')
            self.memo[key] = x.log_softmax(-1)
        return self.memo[key]

    def uncached(self, rows_per_element: int):
        """A step function of whole prefixes; row r is element
        r // rows_per_element."""

        def step(tokens, cache):
            assert cache is None
            self.calls += 1
            return torch.stack(
                [
                    self(r // rows_per_element, tuple(row.tolist()))
                    for r, row in enumerate(tokens)
                ]
            ), None

        return step

    def cached(self):
        """A step function of last tokens; the cache (nested) holds each
        row's element and prefix."""

        def step(tokens, cache):
            assert tokens.shape[1] == 1
            self.calls += 1
            prefix = torch.cat([cache['state'][1], tokens], 1)
            elements = cache['state'][0]
            log_probs = torch.stack(
                [
                    self(int(e), tuple(p.tolist()))
                    for e, p in zip(elements, prefix)
                ]
            )
            return log_probs, dict(state=[elements, prefix])

        return step

    @staticmethod
    def initial_cache(B: int):
        return dict(
            state=[torch.arange(B), torch.empty(B, 0, dtype=torch.long)]
        )


def exhaustive(table: Table, element: int, L: int, alpha: float):
    """The best sequence of at most L tokens (ending at <eos>, or cut at
    L) by sum log p / ((5 + n) / 6) ** alpha, and its score."""
    words = [t for t in range(table.V) if t not in (PAD, BOS, EOS)]
    best = (float('-inf'), None)
    for n in range(1, L + 1):
        lasts = [EOS] if n < L else [EOS, *words]
        for body in itertools.product(words, repeat=n - 1):
            for last in lasts:
                seq = (*body, last)
                total = sum(
                    float(table(element, (BOS, *seq[:i]))[seq[i]])
                    for i in range(n)
                )
                score = total / gnmt_length_penalty(n, alpha)
                if score > best[0]:
                    best = (score, seq)
    return best


def _unpad(row):
    row = row.tolist()
    while row and row[-1] == PAD:
        row.pop()
    return tuple(row)


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0, -0.5])
@pytest.mark.parametrize('eos_bias', [0.3, -1.0])
def test_beam_search_is_exhaustive_when_the_beam_holds_every_prefix(
    alpha, eos_bias
):
    # 3 word tokens, 4 tokens at most: at most 3^t live prefixes and
    # 3^t * 4 candidates a step (36 at t=2), all within the beam of 40
    V, L, B, K = 6, 4, 3, 40
    table = Table(V, seed=1, eos_bias=eos_bias)
    for use_cache in (False, True):
        step = table.cached() if use_cache else table.uncached(K)
        ids, scores = beam_search(
            step,
            B,
            BOS,
            EOS,
            K,
            L,
            length_penalty=alpha,
            cache=Table.initial_cache(B) if use_cache else None,
            use_cache=use_cache,
        )
        assert ids.dtype == torch.long and ids.shape[0] == B
        for e in range(B):
            score, seq = exhaustive(table, e, L, alpha)
            assert _unpad(ids[e]) == seq
            assert float(scores[e]) == pytest.approx(score, abs=1e-12)


def test_greedy_is_a_beam_of_one():
    V, L, B = 12, 10, 5
    for seed in range(3):
        table = Table(V, seed=seed, eos_bias=0.15)
        g_ids, g_scores = greedy_search(
            table.uncached(1), B, BOS, EOS, L, use_cache=False
        )
        b_ids, b_scores = beam_search(
            table.uncached(1),
            B,
            BOS,
            EOS,
            1,
            L,
            length_penalty=0.0,
            use_cache=False,
        )
        assert torch.equal(g_ids, b_ids)
        torch.testing.assert_close(g_scores, b_scores, rtol=0, atol=1e-12)
        # greedy is the argmax at every step, its score their sum
        for e in range(B):
            prefix, total = (BOS,), 0.0
            for _ in range(L):
                log_probs = table(e, prefix)
                token = int(log_probs.argmax())
                total += float(log_probs[token])
                prefix += (token,)
                if token == EOS:
                    break
            assert _unpad(g_ids[e]) == prefix[1:]
            assert float(g_scores[e]) == pytest.approx(total, abs=1e-12)


@pytest.mark.parametrize('beam_size', [1, 3])
def test_cached_equals_uncached_for_a_table(beam_size):
    V, L, B = 9, 8, 4
    table = Table(V, seed=5, eos_bias=0.1)
    search = (
        greedy_search
        if beam_size == 1
        else lambda *a, **k: beam_search(*a[:4], beam_size, *a[4:], **k)
    )
    plain = search(table.uncached(beam_size), B, BOS, EOS, L, use_cache=False)
    cached = search(
        table.cached(), B, BOS, EOS, L, cache=Table.initial_cache(B)
    )
    assert torch.equal(plain[0], cached[0])
    torch.testing.assert_close(plain[1], cached[1], rtol=0, atol=0)


def _head(vocab_size=40, in_channels=12, seed=0):
    torch.manual_seed(seed)
    head = CaptionHead(
        vocab_size=vocab_size,
        in_channels=in_channels,
        width=32,
        depth=2,
        num_heads=4,
        max_length=16,
    ).double()
    with torch.no_grad():  # peaked, varied next-token distributions
        head.token_embed.weight.normal_(std=1.0)
        head.out_bias.normal_(std=1.0)
    return head.eval()


@pytest.mark.parametrize(
    'decode',
    [
        dict(mode='greedy'),
        dict(mode='beam', beam_size=3, length_penalty=0.6),
        dict(mode='beam', beam_size=4, length_penalty=0.0),
    ],
)
def test_caption_head_cached_equals_uncached_float64(decode):
    head = _head()
    visual = torch.randn(3, 7, 12, dtype=torch.float64)
    ids, scores = head.generate(visual, max_length=15, **decode)
    ids_u, scores_u = head.generate(
        visual, max_length=15, use_cache=False, **decode
    )
    assert torch.equal(ids, ids_u)
    torch.testing.assert_close(scores, scores_u, rtol=0, atol=1e-12)
    assert ids.shape[1] > 3  # decoded several steps
    assert int(ids.min()) == PAD or ids.shape[1] == 15
    # specials other than <eos> are never generated
    assert not ((ids > PAD) & (ids < 6) & (ids != EOS)).any()


def test_caption_head_incremental_logits_equal_teacher_forcing():
    head = _head()
    visual = torch.randn(2, 5, 12, dtype=torch.float64)
    ids = torch.randint(3, 40, (2, 9))
    ids[:, 0] = BOS
    full = head(visual, ids)  # [2, 9, V]
    memory = head.memory(visual)
    past, steps = None, []
    for t in range(ids.shape[1]):
        logits, past = head.decode(ids[:, t : t + 1], memory, past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-12)
    # a prefix of 4 then 5 tokens at once (the masked path)
    first, past = head.decode(ids[:, :4], memory)
    rest, _ = head.decode(ids[:, 4:], memory, past)
    torch.testing.assert_close(
        torch.cat([first, rest], 1), full, rtol=0, atol=1e-12
    )


def _eos_at(lengths, rows_per_element=1):
    """Element e emits <eos> as its lengths[e]-th token (None: never);
    token 3 otherwise. Row r is element r // rows_per_element."""

    def step(tokens, cache):
        n = tokens.shape[1]  # uncached: <bos> + n - 1 tokens so far
        out = torch.full((tokens.shape[0], 5), -5.0, dtype=torch.float64)
        out[:, 3] = -0.01
        for r in range(tokens.shape[0]):
            if lengths[r // rows_per_element] == n:
                out[r, EOS] = -0.001
        out[:, PAD] = out[:, BOS] = float('-inf')
        return out, None

    return step


@pytest.mark.parametrize('beam', [False, True])
def test_eos_ends_and_pads_and_max_length_holds(beam):
    lengths = [2, None, 4]
    if beam:
        ids, scores = beam_search(
            _eos_at(lengths), 3, BOS, EOS, 1, 6, 0.0, use_cache=False
        )
    else:
        ids, scores = greedy_search(
            _eos_at(lengths), 3, BOS, EOS, 6, use_cache=False
        )
    assert ids.tolist() == [
        [3, EOS, PAD, PAD, PAD, PAD],
        [3, 3, 3, 3, 3, 3],  # cut at max_length, no <eos>
        [3, 3, 3, EOS, PAD, PAD],
    ]
    torch.testing.assert_close(
        scores,
        torch.tensor([-0.011, -0.06, -0.031], dtype=torch.float64),
    )


def test_decoding_stops_when_every_sequence_ended():
    calls = []

    def counted(step):
        def run(tokens, cache):
            calls.append(tokens.shape)
            return step(tokens, cache)

        return run

    step = counted(_eos_at([2, 3]))
    ids, _ = greedy_search(step, 2, BOS, EOS, 20, use_cache=False)
    assert ids.shape == (2, 3) and len(calls) == 3
    calls.clear()
    step = counted(_eos_at([2, 3], rows_per_element=2))
    ids, _ = beam_search(step, 2, BOS, EOS, 2, 20, 0.0, use_cache=False)
    # the EOS ends at step 2 and 3 beat every live beam: early stop
    assert ids.shape == (2, 3) and len(calls) <= 4
    assert calls[0] == (4, 1)  # B * K rows


def test_max_length_one_and_all_banned():
    def step(tokens, cache):
        out = torch.zeros(tokens.shape[0], 4).log_softmax(-1)
        out[:, :2] = float('-inf')
        return out, cache

    ids, _ = greedy_search(step, 2, BOS, EOS, 1)
    assert ids.shape == (2, 1)
    ids, _ = beam_search(step, 2, BOS, EOS, 3, 1)
    assert ids.shape == (2, 1)
    with pytest.raises(ValueError, match='max_length must be >= 1'):
        greedy_search(step, 2, BOS, EOS, 0)
    with pytest.raises(ValueError, match='beam_size must be >= 1'):
        beam_search(step, 2, BOS, EOS, 0, 3)
    with pytest.raises(ValueError, match=r'log-probs \(2, V\)'):
        greedy_search(lambda t, c: (torch.zeros(3, 4), c), 2, BOS, EOS, 3)


def test_reorder_and_expand_nested_caches():
    Pair = namedtuple('Pair', 'k v')
    x = torch.arange(3)[:, None] * 10 + torch.arange(4)  # [3, 4]
    cache = dict(
        layers=[Pair(x, x.float() + 0.5), (x[:, :2], None)],
        step=7,
        nested=dict(deep=[[x.double()]]),
        nothing=None,
    )
    index = torch.tensor([2, 0, 0])
    out = reorder_cache(cache, index)
    assert isinstance(out['layers'][0], Pair)
    assert torch.equal(out['layers'][0].k, x[index])
    assert torch.equal(out['layers'][0].v, x[index].float() + 0.5)
    assert torch.equal(out['layers'][1][0], x[index, :2])
    assert out['layers'][1][1] is None and out['nothing'] is None
    assert out['step'] == 7
    assert torch.equal(out['nested']['deep'][0][0], x[index].double())
    assert isinstance(out['layers'][1], tuple)
    grown = expand_cache(cache, 2)
    assert torch.equal(grown['layers'][0].k, x[[0, 0, 1, 1, 2, 2]])
    assert reorder_cache(None, index) is None and expand_cache(None, 3) is None
    assert torch.equal(reorder_cache(x, index), x[index])
    shapes = map_cache(lambda t: t.shape, cache)
    assert shapes['nested']['deep'][0][0] == (3, 4)
