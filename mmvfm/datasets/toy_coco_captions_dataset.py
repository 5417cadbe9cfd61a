# Copyright (c) mmvfm contributors. All rights reserved.
from mmdet.registry import DATASETS

from .coco_image_captions_dataset import CocoImageCaptionsDataset
from .toy_coco.first_use_mixin import ToyFirstUseMixin


@DATASETS.register_module()
class ToyCocoCaptionsDataset(ToyFirstUseMixin, CocoImageCaptionsDataset):
    """The toy set's captions (``annotations/captions_{split}.json``): a
    :class:`CocoImageCaptionsDataset` that generates the toy set on first
    use (:class:`ToyFirstUseMixin`).

    Args:
        generator (dict, optional): arguments of
            :func:`~mmvfm.datasets.generate_toy_coco` for that first use.
        **kwargs: as :class:`CocoImageCaptionsDataset`.
    """
