# Copyright (c) mmvfm contributors. All rights reserved.
import os.path as osp
from typing import List, Optional

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .toy_coco import TOY_CLASSES, TOY_PALETTE
from .toy_coco.first_use import ensure_toy_coco, toy_generator_args


@DATASETS.register_module()
class ToyCocoDataset(CocoDataset):
    """The toy COCO set of :func:`mmvfm.datasets.generate_toy_coco`.

    A :class:`mmdet.datasets.CocoDataset` with the toy classes as metainfo
    that generates the set on first use: when the ``data_root`` folder does
    not exist, :func:`~mmvfm.datasets.toy_coco.first_use.ensure_toy_coco`
    writes it there (rank 0, the other ranks wait; a log line says where
    and as which command). A folder that exists but lacks the file gets an
    error that says how to regenerate it.

    Args:
        generator (dict, optional): arguments of
            :func:`~mmvfm.datasets.generate_toy_coco` for that first use
            (e.g. ``dict(num_train=500, seed=1)`` or ``dict(domain='ood')``;
            default: its own defaults, the README's set). Checked at build
            time.
        **kwargs: as :class:`mmdet.datasets.CocoDataset`.
    """

    METAINFO = dict(classes=TOY_CLASSES, palette=TOY_PALETTE)

    def __init__(self, *args, generator: Optional[dict] = None, **kwargs):
        self.generator = toy_generator_args(
            generator, f'{type(self).__name__}.generator'
        )
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        if self.data_root and '://' not in self.data_root:
            ensure_toy_coco(self.data_root, self.generator)
        if not osp.isfile(self.ann_file):
            root = self.data_root or osp.dirname(osp.dirname(self.ann_file))
            raise FileNotFoundError(
                f'{type(self).__name__}: ann_file "{self.ann_file}" does '
                f'not exist. Generate the toy set with: python '
                f'tools/dataset_converters/generate_toy_coco.py {root}'
            )
        return super().load_data_list()
