# Copyright (c) mmvfm contributors. All rights reserved.
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .toy_coco.first_use_mixin import ToyFirstUseMixin


# NOTE: registered in mmpretrain's registry, not mmdet's: configs build it
# as ``type='mmpretrain.ToyClassificationDataset'`` so that its pipeline
# (``Resize``, ``mmpretrain.PackInputs``) resolves in mmpretrain's scope,
# exactly as ``mmpretrain.BaseDataset``'s did.
@DATASETS.register_module()
class ToyClassificationDataset(ToyFirstUseMixin, BaseDataset):
    """The toy set's single-label classification file
    (``annotations/classification_{split}.json``, OpenMMLab 2.0 format,
    the classes in its ``metainfo``): an mmpretrain ``BaseDataset`` that
    generates the toy set on first use (:class:`ToyFirstUseMixin`).

    Args:
        generator (dict, optional): arguments of
            :func:`~mmvfm.datasets.generate_toy_coco` for that first use.
        **kwargs: as ``mmpretrain.datasets.BaseDataset``.
    """
