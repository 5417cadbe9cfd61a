# Copyright (c) mmvfm contributors. All rights reserved.
from .annotation_check import install_annotation_check
from .coco_image_captions_dataset import CocoImageCaptionsDataset
from .samplers import ResumableInfiniteSampler
from .toy_classification_dataset import ToyClassificationDataset
from .toy_coco import (
    TOY_CLASSES,
    TOY_COLORS,
    TOY_PALETTE,
    generate_toy_coco,
    verify_toy_coco,
)
from .toy_coco.first_use import (
    TOY_DATASET_TYPES,
    ensure_toy_coco,
    ensure_toy_tokenizer,
    prepare_toy_data,
)
from .toy_coco.first_use_mixin import ToyFirstUseMixin
from .toy_coco_captions_dataset import ToyCocoCaptionsDataset
from .toy_coco_dataset import ToyCocoDataset

# every CocoDataset (stock configs that import mmvfm included) checks its
# annotations while parsing them
install_annotation_check()

__all__ = [
    'CocoImageCaptionsDataset',
    'ResumableInfiniteSampler',
    'TOY_CLASSES',
    'TOY_COLORS',
    'TOY_DATASET_TYPES',
    'TOY_PALETTE',
    'ToyClassificationDataset',
    'ToyCocoCaptionsDataset',
    'ToyCocoDataset',
    'ToyFirstUseMixin',
    'ensure_toy_coco',
    'ensure_toy_tokenizer',
    'generate_toy_coco',
    'prepare_toy_data',
    'verify_toy_coco',
]
