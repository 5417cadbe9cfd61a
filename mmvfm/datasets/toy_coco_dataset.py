# Copyright (c) mmvfm contributors. All rights reserved.
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .toy_coco import TOY_CLASSES, TOY_PALETTE
from .toy_coco.first_use_mixin import ToyFirstUseMixin


@DATASETS.register_module()
class ToyCocoDataset(ToyFirstUseMixin, CocoDataset):
    """The toy COCO set of :func:`mmvfm.datasets.generate_toy_coco`
    (detection, instance segmentation).

    A :class:`mmdet.datasets.CocoDataset` with the toy classes as metainfo
    that generates the set on first use (:class:`ToyFirstUseMixin`).

    Args:
        generator (dict, optional): arguments of
            :func:`~mmvfm.datasets.generate_toy_coco` for that first use.
        **kwargs: as :class:`mmdet.datasets.CocoDataset`.
    """

    METAINFO = dict(classes=TOY_CLASSES, palette=TOY_PALETTE)
