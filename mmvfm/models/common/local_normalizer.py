# Copyright (c) mmvfm contributors. All rights reserved.
"""Rank-local loss normalisers for mmdet's set-prediction heads.

mmdet's Mask2Former, MaskFormer, DETR and DINO heads average their loss
normalisers (the number of masks or positives, the classification
``avg_factor``) over the ranks with ``mmdet.utils.reduce_mean``: an
all-reduce that every rank must call. Under *mixed* multi-task sampling
each rank trains its own task, so a rank in a detection step would wait
for ranks in a captioning step (on gloo: a collective mismatch and an
abort). Inside :func:`rank_local_normalizers` these heads use their own
rank's value, as a single-process run does; nothing else changes.
"""

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor

__all__ = ['rank_local_normalizers']

# the mmdet modules whose loss code calls their own ``reduce_mean`` name
_HEAD_MODULES = (
    'mmdet.models.dense_heads.mask2former_head',
    'mmdet.models.dense_heads.maskformer_head',
    'mmdet.models.dense_heads.detr_head',
    'mmdet.models.dense_heads.dino_head',
)


def _rank_local(tensor: Tensor) -> Tensor:
    return tensor  # what reduce_mean gives without a process group


@contextmanager
def rank_local_normalizers(enabled: bool = True) -> Iterator[None]:
    """Within the block, the heads of ``_HEAD_MODULES`` normalise their
    losses by their own rank's counts (no collective). ``enabled=False``
    is a no-op (the synchronised normalisers of a stock run)."""
    if not enabled:
        yield
        return
    import importlib

    modules = [importlib.import_module(name) for name in _HEAD_MODULES]
    saved = [module.reduce_mean for module in modules]
    for module in modules:
        module.reduce_mean = _rank_local
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.reduce_mean = original
