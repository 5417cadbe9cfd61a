# Copyright (c) mmvfm contributors. All rights reserved.
import os.path as osp
from typing import List

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .toy_coco import TOY_CLASSES, TOY_PALETTE


@DATASETS.register_module()
class ToyCocoDataset(CocoDataset):
    """The toy COCO set of :func:`mmvfm.datasets.generate_toy_coco`.

    A :class:`mmdet.datasets.CocoDataset` with the toy classes as metainfo
    and an error that says how to generate the set when it is missing.
    """

    METAINFO = dict(classes=TOY_CLASSES, palette=TOY_PALETTE)

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            root = self.data_root or osp.dirname(osp.dirname(self.ann_file))
            raise FileNotFoundError(
                f'{type(self).__name__}: ann_file "{self.ann_file}" does '
                f'not exist. Generate the toy set with: python '
                f'tools/dataset_converters/generate_toy_coco.py {root}'
            )
        return super().load_data_list()
