# Copyright (c) mmvfm contributors. All rights reserved.
from typing import Iterator, Optional, Sized

import torch
from mmdet.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(Sampler):
    """An infinite sampler that can start at any position of its stream.

    The global stream is the concatenation of one permutation of the
    dataset per pass (``seed + pass``); rank ``r`` of ``w`` takes positions
    ``r, r + w, r + 2w, ...``, so ranks share each pass. Unlike mmengine's
    ``InfiniteSampler``, ``set_consumed(n)`` makes the next iterator start
    after the first ``n`` indices of this rank's stream, computed, not
    replayed: a resumed multi-task run continues each task's data where it
    stopped without loading the skipped batches.

    Args:
        dataset (Sized): the dataset.
        shuffle (bool): permute each pass. Defaults to True.
        seed (int, optional): shared by all ranks (synchronised if None).
    """

    def __init__(
        self, dataset: Sized, shuffle: bool = True, seed: Optional[int] = None
    ) -> None:
        rank, world_size = get_dist_info()
        self.rank, self.world_size = rank, world_size
        self.dataset = dataset
        self.size = len(dataset)
        if self.size == 0:
            raise ValueError('ResumableInfiniteSampler: the dataset is empty')
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.consumed = 0

    def set_consumed(self, consumed: int) -> None:
        """Start the next iterator after ``consumed`` indices of this rank."""
        if consumed < 0:
            raise ValueError(f'consumed must be >= 0, got {consumed}')
        self.consumed = int(consumed)

    def _pass(self, index: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        g.manual_seed(self.seed + index)
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[int]:
        # position p of the global stream is offset p % size of pass
        # p // size; this rank reads p = rank + j * world_size
        j, cached, order = self.consumed, -1, []
        while True:
            index, offset = divmod(self.rank + j * self.world_size, self.size)
            if index != cached:
                order, cached = self._pass(index).tolist(), index
            yield order[offset]
            j += 1

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Not used: the stream does not depend on epochs."""
