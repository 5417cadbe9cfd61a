# Copyright (c) mmvfm contributors. All rights reserved.
"""Images and their reference captions from a COCO captions file."""

import logging
import os.path as osp
from collections import defaultdict
from typing import List

from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from .json_file import load_json


@DATASETS.register_module()
class CocoImageCaptionsDataset(BaseDataset):
    """One item per image with all its captions, read from an official
    COCO captions annotation file (``captions_val2017.json``; the toy set's
    ``annotations/captions_{split}.json``), not the Karpathy-split lists
    of one caption per item that mmdet's ``CocoCaptionDataset`` and
    mmpretrain's ``COCOCaption`` read.

    Each data info::

        img_path    data_root / data_prefix['img'] / file_name
        img_id      int, the COCO image id
        gt_caption  list[str], the image's captions in file order
        height, width

    Pack ``gt_caption`` into the data sample (e.g.
    ``dict(type='mmpretrain.PackInputs', algorithm_keys=['gt_caption'])``)
    for :class:`~mmvfm.evaluation.CaptionMetric`, or give the metric the
    same ``ann_file``. Images without a caption are left out (a warning
    says how many); a file with no captioned image is an error.

    Args:
        ann_file (str): the captions json (under ``data_root``).
        data_prefix (dict): ``img``: the image folder (under
            ``data_root``) that ``file_name`` is relative to.
        **kwargs: as :class:`mmengine.dataset.BaseDataset`.
    """

    METAINFO: dict = dict()

    def __init__(
        self, ann_file: str, data_prefix: dict = dict(img=''), **kwargs
    ) -> None:
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, **kwargs)

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'{name}: ann_file "{self.ann_file}" does not exist'
            )
        ann = load_json(self.ann_file)
        if not isinstance(ann, dict) or not all(
            k in ann for k in ('images', 'annotations')
        ):
            raise ValueError(
                f'{name}: ann_file "{self.ann_file}" is not a COCO '
                'annotation file (needs "images" and "annotations")'
            )
        captions = defaultdict(list)
        for a in ann['annotations']:
            caption = a.get('caption')
            if not isinstance(caption, str):
                raise ValueError(
                    f'{name}: annotation {a.get("id")} of "{self.ann_file}" '
                    'has no "caption" string (an instances file?)'
                )
            captions[a['image_id']].append(caption)
        img_root = self.data_prefix.get('img', '')
        data_list, uncaptioned = [], 0
        for img in sorted(ann['images'], key=lambda i: i['id']):
            refs = captions.get(img['id'])
            if not refs:
                uncaptioned += 1
                continue
            data_list.append(
                dict(
                    img_path=osp.join(img_root, img['file_name']),
                    img_id=img['id'],
                    gt_caption=list(refs),
                    height=img.get('height'),
                    width=img.get('width'),
                )
            )
        if not data_list:
            raise ValueError(
                f'{name}: no image of "{self.ann_file}" has a caption'
            )
        if uncaptioned:
            print_log(
                f'{name}: {uncaptioned} image(s) of "{self.ann_file}" have '
                'no caption and are left out',
                logger='current',
                level=logging.WARNING,
            )
        return data_list
