# Copyright (c) mmvfm contributors. All rights reserved.
"""The first-use generation shared by the toy datasets."""

import os.path as osp
from typing import List, Optional

from .first_use import ensure_toy_coco, toy_generator_args

__all__ = ['ToyFirstUseMixin']


class ToyFirstUseMixin:
    """A dataset of the toy set that generates the set on first use.

    Mixed in before the dataset class (``class ToyX(ToyFirstUseMixin,
    XDataset)``): its ``load_data_list`` runs :meth:`prepare_toy_files`,
    then the dataset's own. When the ``data_root`` folder does not
    exist, :func:`~.first_use.ensure_toy_coco` writes the whole toy set
    there (detection, captions, classification: every file the toy configs
    read; rank 0, the other ranks wait; a log line says where and as which
    command). A folder that exists but lacks the file gets an error that
    says how to regenerate it; a real dataset is never written.

    Args:
        generator (dict, optional): arguments of
            :func:`~mmvfm.datasets.generate_toy_coco` for that first use
            (e.g. ``dict(num_train=500, seed=1)``; default: its own
            defaults, the README's set). Checked at build time.
    """

    def __init__(self, *args, generator: Optional[dict] = None, **kwargs):
        self.generator = toy_generator_args(
            generator, f'{type(self).__name__}.generator'
        )
        super().__init__(*args, **kwargs)

    def prepare_toy_files(self) -> None:
        """Generate an absent toy set; name a missing ``ann_file``."""
        if self.data_root and '://' not in self.data_root:
            ensure_toy_coco(self.data_root, self.generator)
        if not osp.isfile(self.ann_file):
            root = self.data_root or osp.dirname(osp.dirname(self.ann_file))
            raise FileNotFoundError(
                f'{type(self).__name__}: ann_file "{self.ann_file}" does '
                f'not exist. Generate the toy set with: python '
                f'tools/dataset_converters/generate_toy_coco.py {root}'
            )

    def load_data_list(self) -> List[dict]:
        self.prepare_toy_files()
        return super().load_data_list()
