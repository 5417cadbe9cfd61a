# Copyright (c) mmvfm contributors. All rights reserved.
"""Autoregressive decoding, independent of any model: greedy and beam search
over a step function.

The step function::

    step_fn(tokens, cache) -> (log_probs, new_cache)

- ``tokens`` (B, 1) int64: the last token of each sequence when the cache
  is used (``use_cache=True``, the default); the whole prefix (B, t),
  ``<bos>`` first, with ``cache=None`` when it is not
  (``use_cache=False``: for models without a cache, and to test a cached
  step function against its uncached self);
- ``cache``: anything the model keeps between steps: None, a tensor, or a
  nested dict / list / tuple of tensors, each with the batch (beam)
  dimension first; None on the first step unless the caller passes one;
- ``log_probs`` (B, V) float: normalised log-probabilities of the next
  token (a ``log_softmax``; every value <= 0, which beam search's early
  stop relies on). A token the model must never produce gets ``-inf``.

Lengths: ``max_length`` counts generated tokens, ``<eos>`` included and
``<bos>`` not; the returned ids hold only the generated tokens (no
``<bos>``): a sequence ends at its first ``<eos>`` and is padded with
``pad`` after it; a sequence without ``<eos>`` was cut at ``max_length``.

Length penalty (beam search): GNMT's (Wu et al., 2016). A hypothesis of
``n`` generated tokens (``<eos>`` included) whose log-probabilities sum to
``S`` scores::

    score = S / lp(n),    lp(n) = ((5 + n) / 6) ** alpha

``alpha = length_penalty``; 0 ranks by ``S`` alone, > 0 favours longer
hypotheses. Greedy search returns ``S`` (it does not rank hypotheses).

Beam search keeps the slots of batch element ``b`` at rows
``b * beam_size ... b * beam_size + beam_size - 1`` throughout: a reorder
never moves a row to another element, so a per-element constant (e.g. the
keys / values of an encoder's output) can be repeated ``beam_size`` times
once (:func:`expand_cache`) and kept outside the cache, never reordered.
"""

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from .bpe_tokenizer import PAD

StepFn = Callable[[Tensor, Any], Tuple[Tensor, Any]]

__all__ = [
    'StepFn',
    'beam_search',
    'expand_cache',
    'gnmt_length_penalty',
    'greedy_search',
    'map_cache',
    'reorder_cache',
]


def map_cache(fn: Callable[[Tensor], Tensor], cache: Any) -> Any:
    """``fn`` applied to every tensor of a nested dict / list / tuple (a
    namedtuple keeps its type); other leaves (None, ints, ...) are kept.
    """
    if isinstance(cache, Tensor):
        return fn(cache)
    if isinstance(cache, dict):
        return type(cache)((k, map_cache(fn, v)) for k, v in cache.items())
    if isinstance(cache, tuple) and hasattr(cache, '_fields'):
        return type(cache)(*(map_cache(fn, v) for v in cache))
    if isinstance(cache, (list, tuple)):
        return type(cache)(map_cache(fn, v) for v in cache)
    return cache


def reorder_cache(cache: Any, index: Tensor) -> Any:
    """Rows ``index`` of every tensor of a nested cache.

    Args:
        cache: None, a tensor or a nested dict / list / tuple of tensors,
            each (B, ...) with the batch (beam) dimension first.
        index (Tensor): (B',) int64 rows to take (repeats allowed).

    Returns:
        The same structure with every tensor ``t.index_select(0, index)``
        (B', ...).
    """
    return map_cache(lambda t: t.index_select(0, index.to(t.device)), cache)


def expand_cache(cache: Any, times: int) -> Any:
    """Every row of a nested cache repeated ``times`` times in place
    (row ``b`` becomes rows ``b * times ... b * times + times - 1``), as
    beam search lays out its beams: (B, ...) -> (B * times, ...)."""
    return map_cache(lambda t: t.repeat_interleave(times, dim=0), cache)


def gnmt_length_penalty(length, alpha: float):
    """GNMT's length penalty ``((5 + length) / 6) ** alpha`` (a float, or
    a tensor for a tensor ``length``)."""
    return ((5.0 + length) / 6.0) ** alpha


def _first_device(cache: Any) -> Optional[torch.device]:
    found = []
    map_cache(lambda t: found.append(t.device) or t, cache)
    return found[0] if found else None


def _check(batch_size: int, max_length: int) -> None:
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if max_length < 1:
        raise ValueError(f'max_length must be >= 1, got {max_length}')


def _step(
    step_fn: StepFn,
    prefix: Tensor,
    cache: Any,
    use_cache: bool,
    rows: int,
) -> Tuple[Tensor, Any]:
    """One call of ``step_fn``, its output checked to be (rows, V)."""
    if use_cache:
        log_probs, cache = step_fn(prefix[:, -1:], cache)
    else:
        log_probs, _ = step_fn(prefix, None)
    if log_probs.dim() != 2 or log_probs.shape[0] != rows:
        raise ValueError(
            f'step_fn must return log-probs ({rows}, V), got '
            f'{tuple(log_probs.shape)}'
        )
    return log_probs, cache


@torch.no_grad()
def greedy_search(
    step_fn: StepFn,
    batch_size: int,
    bos: int,
    eos: int,
    max_length: int,
    cache: Any = None,
    use_cache: bool = True,
    pad: int = PAD,
    device=None,
) -> Tuple[Tensor, Tensor]:
    """The most likely next token at every step, until ``<eos>`` or
    ``max_length`` generated tokens.

    Args:
        step_fn: see the module docstring.
        batch_size (int): B, sequences decoded together.
        bos (int): the first input token.
        eos (int): ends a sequence.
        max_length (int): the most generated tokens, ``<eos>`` included.
        cache: the step function's initial cache (batch first), or None.
        use_cache (bool): feed the last token and the cache (True) or the
            whole prefix and ``cache=None`` (False).
        pad (int): fills each sequence after its ``<eos>``.
        device: of the tokens; defaults to the cache's, else the CPU.

    Returns:
        tuple: ids (B, T) int64 of the generated tokens, T <= max_length
        (the longest sequence; no ``<bos>``, ``pad`` after ``<eos>``),
        and scores (B,): the sum of the log-probabilities of each
        sequence's tokens, ``<eos>`` included.
    """
    _check(batch_size, max_length)
    device = device or _first_device(cache) or 'cpu'
    prefix = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    scores = None
    for _ in range(max_length):
        log_probs, cache = _step(step_fn, prefix, cache, use_cache, batch_size)
        best, token = log_probs.max(-1)  # [B]
        if scores is None:
            scores = torch.zeros_like(best)
        scores = scores + torch.where(finished, torch.zeros_like(best), best)
        token = token.masked_fill(finished, pad)
        prefix = torch.cat([prefix, token[:, None]], 1)
        finished |= token == eos
        if bool(finished.all()):
            break
    return prefix[:, 1:], scores


@torch.no_grad()
def beam_search(
    step_fn: StepFn,
    batch_size: int,
    bos: int,
    eos: int,
    beam_size: int,
    max_length: int,
    length_penalty: float = 0.6,
    cache: Any = None,
    use_cache: bool = True,
    pad: int = PAD,
    device=None,
) -> Tuple[Tensor, Tensor]:
    """The best hypothesis of a beam search, scored with GNMT's length
    penalty (module docstring).

    Each step extends the ``beam_size`` live hypotheses of every batch
    element by every token and ranks the ``beam_size * V`` candidates by
    their sum of log-probabilities. Among the best ``2 * beam_size``:

    - an ``<eos>`` candidate ranked within the first ``beam_size`` is a
      finished hypothesis, kept if its score (with the length penalty)
      beats the element's best finished one;
    - the best ``beam_size`` other candidates are the next live beams.

    At ``max_length`` every candidate is finished. An element stops when no
    live beam can beat its best finished hypothesis: log-probabilities are
    <= 0, so a live beam of sum ``S`` after ``n`` tokens scores at most
    ``max(S / lp(n + 1), S / lp(max_length))``; decoding stops when every
    element has stopped. With ``beam_size=1`` and ``length_penalty=0``
    this is :func:`greedy_search`.

    Args:
        step_fn: see the module docstring; it is called with
            ``batch_size * beam_size`` rows, beam ``k`` of element ``b`` at
            row ``b * beam_size + k``.
        batch_size (int): B.
        bos (int): the first input token.
        eos (int): ends a hypothesis.
        beam_size (int): live hypotheses per element, K.
        max_length (int): the most generated tokens, ``<eos>`` included.
        length_penalty (float): GNMT's ``alpha``.
        cache: the step function's initial cache for the B elements (batch
            first), or None; it is expanded to B * K rows
            (:func:`expand_cache`) and reordered with the beams
            (:func:`reorder_cache`).
        use_cache (bool): feed the last token and the cache (True) or the
            whole prefix and ``cache=None`` (False).
        pad (int): fills each hypothesis after its ``<eos>``.
        device: of the tokens; defaults to the cache's, else the CPU.

    Returns:
        tuple: ids (B, T) int64 of each element's best hypothesis, T <=
        max_length (no ``<bos>``, ``pad`` after ``<eos>``), and their
        scores (B,) with the length penalty.
    """
    _check(batch_size, max_length)
    if beam_size < 1:
        raise ValueError(f'beam_size must be >= 1, got {beam_size}')
    B, K = batch_size, beam_size
    device = device or _first_device(cache) or 'cpu'
    cache = expand_cache(cache, K)
    prefix = torch.full((B * K, 1), bos, dtype=torch.long, device=device)
    rows = torch.arange(B, device=device)[:, None] * K  # [B, 1]
    live = None  # [B, K] sums of log-probs; -inf: an empty slot
    best = None  # [B] the best finished score (with the penalty)
    best_ids = torch.full((B, max_length), pad, dtype=torch.long)
    best_ids = best_ids.to(device)
    best_len = torch.zeros(B, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)

    def keep_better(scores: Tensor, idx: Tensor, finished: Tensor, n: int):
        """Keep each element's best finished candidate if it beats its
        best so far: ``scores`` / ``idx`` (B, C) with the length penalty /
        as ``beam * V + token``; ``finished`` (B, C) bool."""
        top, j = scores.masked_fill(~finished, float('-inf')).max(1)  # [B]
        better = (top > best) & ~done
        if not bool(better.any()):
            return
        pick = idx.gather(1, j[:, None])[:, 0]  # [B]
        parent = prefix.index_select(0, rows[:, 0] + pick // V)[:, 1:]
        ids = torch.cat([parent, (pick % V)[:, None]], 1)  # [B, n]
        best_ids[better, :n] = ids[better]
        best_ids[better, n:] = pad
        best_len[better] = n
        best[better] = top[better]

    for t in range(max_length):
        n = t + 1  # tokens of the candidates, <eos> included
        log_probs, cache = _step(step_fn, prefix, cache, use_cache, B * K)
        V = log_probs.shape[-1]
        if live is None:  # one hypothesis (<bos>) per element at first
            live = log_probs.new_full((B, K), float('-inf'))
            live[:, 0] = 0
            best = log_probs.new_full((B,), float('-inf'))
        lp = gnmt_length_penalty(float(n), length_penalty)
        cand = (live[:, :, None] + log_probs.view(B, K, V)).view(B, K * V)
        if n == max_length:  # every candidate is finished
            top, idx = cand.max(1, keepdim=True)  # [B, 1]
            keep_better(top / lp, idx, torch.ones_like(idx, dtype=bool), n)
            break
        top, idx = cand.topk(min(2 * K, K * V), dim=1)  # [B, 2K], sorted
        is_eos = idx % V == eos
        first_k = torch.arange(top.shape[1], device=device)[None] < K
        keep_better(top / lp, idx, is_eos & first_k, n)
        # the next live beams: the best K candidates that do not end
        live, pos = top.masked_fill(is_eos, float('-inf')).topk(K, dim=1)
        idx = idx.gather(1, pos)  # [B, K]
        src = (rows + idx // V).view(-1)  # [B*K] each new beam's parent row
        prefix = torch.cat(
            [prefix.index_select(0, src), idx.view(-1, 1) % V], 1
        )
        if use_cache:
            cache = reorder_cache(cache, src)
        # stop: no live beam can beat the best finished hypothesis
        bound = torch.maximum(
            live / gnmt_length_penalty(float(n + 1), length_penalty),
            live / gnmt_length_penalty(float(max_length), length_penalty),
        )
        done |= (bound <= best[:, None]).all(1)
        if bool(done.all()):
            break
    return best_ids[:, : max(int(best_len.max()), 1)], best
