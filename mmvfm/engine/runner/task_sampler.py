# Copyright (c) mmvfm contributors. All rights reserved.
"""Which task each iteration trains, as a pure function of the iteration.

``TaskSampler.task_at(iteration, rank)`` draws a task by the configured
ratios from a counter-based hash of ``(seed, iteration[, rank])``: no state,
no communication, identical on every rank and after a resume.

- ``'unmixed'`` (Uni-Perceiver v2): the draw depends on the iteration only,
  so every rank trains the same task in an iteration.
- ``'mixed'`` (Uni-Perceiver v1): the rank is part of the draw, so ranks
  train different tasks in one iteration.
"""

from typing import Dict, List, Sequence

import numpy as np

STRATEGIES = ('mixed', 'unmixed')
_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over='ignore'):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def uniform_hash(seed: int, iterations: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) numbers, one per iteration, for ``(seed, stream)``.

    Args:
        seed (int): the sampler's seed.
        iterations (np.ndarray): int array of iteration indices.
        stream (int): 0 for unmixed draws, ``rank + 1`` for mixed ones.

    Returns:
        np.ndarray: float64 array shaped like ``iterations``.
    """
    key = _splitmix64(np.array([(seed & _MASK64)], dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(stream & _MASK64))
    with np.errstate(over='ignore'):
        x = _splitmix64(np.asarray(iterations, dtype=np.uint64) ^ key[0])
    # the top 53 bits as a double in [0, 1)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class TaskSampler:
    """Draws the task of each iteration by ratio.

    Args:
        ratios (dict[str, float]): task name -> sampling ratio (normalised;
            must be > 0). The draws do not depend on the dict's order.
        strategy (str): ``'unmixed'`` (every rank the same task) or
            ``'mixed'`` (each rank its own draw).
        seed (int): seed of the draws.
    """

    def __init__(
        self,
        ratios: Dict[str, float],
        strategy: str = 'unmixed',
        seed: int = 0,
    ) -> None:
        if not ratios:
            raise ValueError('task_ratios: at least one task is needed')
        for task, ratio in ratios.items():
            if not (isinstance(ratio, (int, float)) and ratio > 0):
                raise ValueError(
                    f'task_ratios.{task} must be > 0, got {ratio!r}'
                )
        if strategy not in STRATEGIES:
            raise ValueError(
                f'strategy must be one of {STRATEGIES}, got {strategy!r}'
            )
        # canonical order: the draws must not depend on the order of the
        # config dict (``Config.dump`` sorts keys, so a dumped config would
        # otherwise train a different task sequence)
        self.tasks: List[str] = sorted(ratios)
        total = float(sum(ratios.values()))
        self.probs = np.array([ratios[t] / total for t in self.tasks])
        self._edges = np.cumsum(self.probs)
        self._edges[-1] = 1.0
        self.strategy = strategy
        self.seed = int(seed)

    def _stream(self, rank: int) -> int:
        return rank + 1 if self.strategy == 'mixed' else 0

    def task_indices(
        self, iterations: Sequence[int], rank: int = 0
    ) -> np.ndarray:
        """Index into ``self.tasks`` of each iteration's task."""
        u = uniform_hash(self.seed, np.asarray(iterations), self._stream(rank))
        return np.searchsorted(self._edges, u, side='right')

    def task_at(self, iteration: int, rank: int = 0) -> str:
        """The task trained by ``rank`` at ``iteration`` (0-based)."""
        return self.tasks[int(self.task_indices([iteration], rank)[0])]

    def counts(self, iterations: int, rank: int = 0) -> Dict[str, int]:
        """How many of the iterations ``0 .. iterations-1`` each task got
        on ``rank`` (what a resumed run must skip in each task's data)."""
        idx = self.task_indices(np.arange(iterations), rank)
        bins = np.bincount(idx, minlength=len(self.tasks))
        return {t: int(n) for t, n in zip(self.tasks, bins)}
