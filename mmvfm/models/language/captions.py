# Copyright (c) mmvfm contributors. All rights reserved.
"""Reading the reference captions of data samples (``gt_caption``), one
place for every model that trains on captions (CLIP, the caption task
head, Uni-Perceiver v2)."""

from typing import List, Sequence

import torch


def sample_captions(sample, index: int, owner: str) -> List[str]:
    """The captions of one data sample as a non-empty list.

    Args:
        sample: a data sample with ``gt_caption`` (a string or a list of
            strings).
        index (int): its position in the batch (for the error).
        owner (str): the model reading it (for the error).

    Raises:
        ValueError: no ``gt_caption``, an empty list, or non-strings.
    """
    caps = sample.get('gt_caption', None)
    if isinstance(caps, str):
        caps = [caps]
    if (
        not isinstance(caps, (list, tuple))
        or not caps
        or not all(isinstance(c, str) for c in caps)
    ):
        raise ValueError(
            f'{owner}: data sample {index} has no `gt_caption` (a string or '
            'a non-empty list of strings; pack it with '
            "PackInputs(algorithm_keys=['gt_caption'])), got {caps!r}"
        )
    return list(caps)


def one_caption_each(data_samples: Sequence, owner: str) -> List[str]:
    """One caption per data sample, drawn uniformly among its references
    (torch's global generator)."""
    texts = []
    for i, sample in enumerate(data_samples):
        caps = sample_captions(sample, i, owner)
        texts.append(caps[int(torch.randint(len(caps), ()))])
    return texts
