# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's region proposal stage: class-agnostic instances
(objectness, mask, box, semantic feature) for the proposal tokens.

The paper uses a MaskDINO-like stage; mmdet has no MaskDINO. This one is
mmdet's :class:`Mask2FormerHead` with a single foreground class (plus its
"no object" class), on the multi-scale maps of an optional neck:

- objectness of a proposal: the softmax probability of the foreground
  class (Mask2Former's classifier with one class);
- mask: the head's mask logits of the last decoder layer (stride of its
  mask features);
- box: the tight box of the mask thresholded at probability 0.5
  (:func:`masks_to_boxes`; MaskDINO predicts boxes with a box branch,
  Mask2Former has none: a design difference);
- semantic feature ``q_sem``: the query's features after the decoder's
  final layer norm, the very input of its class and mask branches
  (recorded by a forward hook on ``transformer_decoder.post_norm``, whose
  last call in a forward is the last layer's).

Training: Mask2Former's own losses (Hungarian matching per decoder layer,
class/mask/dice) with every ground-truth instance relabelled foreground.
:meth:`RegionProposer.loss` also returns the last layer's matching
(``pos_inds``, ``pos_assigned_gt_inds`` per image), the very one the
head's loss made (recorded from its ``_get_targets_single`` calls, not run
again), for the task-level objective of the proposals.

What we took from mmdet: ``Mask2FormerHead`` (pixel decoder, transformer
decoder, matching, losses) unchanged. What is not here: DINO's query
selection from the encoder tokens, denoising queries and the box branch
(the COCO configs' stage, part of the issue's follow-up).
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..common.local_normalizer import rank_local_normalizers

Matches = List[Tuple[Tensor, Tensor]]


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight ``(x1, y1, x2, y2)`` boxes (pixel edges) of binary masks.

    Args:
        masks (Tensor): (..., H, W) bool.

    Returns:
        Tensor: (..., 4) float; all zeros for an empty mask (as mmdet's
        ``mask2bbox``, vectorised).
    """
    H, W = masks.shape[-2:]
    cols = masks.any(-2)  # [..., W]
    rows = masks.any(-1)  # [..., H]
    empty = ~cols.any(-1)
    x1 = cols.float().argmax(-1)
    x2 = W - cols.flip(-1).float().argmax(-1)
    y1 = rows.float().argmax(-1)
    y2 = H - rows.flip(-1).float().argmax(-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float()
    return boxes.masked_fill(empty[..., None], 0.0)


@MODELS.register_module()
class RegionProposer(BaseModule):
    """Args:
    head (dict): a ``Mask2FormerHead`` config; its classes are set to one
        foreground class (``num_things_classes=1``, no stuff): any other
        value is an error (a class-agnostic stage).
    neck (dict, optional): multi-scale maps from the backbone's outputs
        (e.g. ``SimpleFeaturePyramid`` for a plain ViT).
    train_cfg (dict, optional): the head's matching and point sampling
        (as ``Mask2Former``'s ``train_cfg``).
    sync_normalizers (bool): average the loss normalisers over the ranks
        (mmdet's ``reduce_mean``, a collective; default). ``False``: each
        rank's own, required under the multi-task loop's ``'mixed'``
        sampling, where the ranks train different tasks.
    init_cfg (dict, optional): initialisation config.
    """

    box_from_masks = True  # no box branch: boxes are the masks' tight boxes

    def __init__(
        self,
        head: dict,
        neck: Optional[dict] = None,
        train_cfg: Optional[dict] = None,
        sync_normalizers: bool = True,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.sync_normalizers = bool(sync_normalizers)
        # mmdet's head reads its sub-configs by attribute
        head = ConfigDict(copy.deepcopy(head))
        for key, want in (('num_things_classes', 1), ('num_stuff_classes', 0)):
            if head.get(key, want) != want:
                raise ValueError(
                    f'RegionProposer: head.{key} must be {want} (class-'
                    f'agnostic proposals; the classes are the task '
                    f'candidates), got {head[key]}'
                )
        head.update(num_things_classes=1, num_stuff_classes=0)
        loss_cls = dict(head.get('loss_cls') or {})
        weight = loss_cls.get('class_weight')
        if weight is not None and len(weight) != 2:
            raise ValueError(
                'RegionProposer: head.loss_cls.class_weight needs 2 values '
                f'(foreground, no object), got {len(weight)}'
            )
        head.update(
            train_cfg=ConfigDict(copy.deepcopy(train_cfg or {})), test_cfg=None
        )
        self.neck = MODELS.build(neck) if neck is not None else None
        self.head = MODELS.build(head)
        self.num_queries = self.head.num_queries
        self.query_dims = self.head.transformer_decoder.embed_dims
        self._recorded: List[Tensor] = []
        self.head.transformer_decoder.post_norm.register_forward_hook(
            self._record
        )

    def _record(self, module, args, output: Tensor) -> None:
        self._recorded.append(output)

    def forward(
        self, feats: Sequence[Tensor], data_samples: list
    ) -> Dict[str, object]:
        """Args:
            feats (Sequence[Tensor]): the backbone's maps (N, C_l, h_l, w_l).
            data_samples (list): the batch's data samples (their
                ``batch_input_shape``).

        Returns:
            dict: the proposal-stage interface :class:`UniPerceiverV2`
            reads -- ``queries`` (N, Q, C) the last layer's query features,
            ``mask_logits`` (N, Q, h, w) its masks, ``boxes`` (N, Q, 4)
            normalised ``(cx, cy, w, h)`` (no gradient), ``objectness``
            (N, Q) -- and, for :meth:`loss`, ``cls`` / ``masks``: the
            (N, Q, 2) logits and (N, Q, h, w) masks of every decoder layer.
        """
        x = self.neck(tuple(feats)) if self.neck is not None else feats
        self._recorded = []
        cls, masks = self.head(tuple(x), data_samples)
        queries = self._recorded[-1]
        self._recorded = []
        return dict(
            queries=queries,
            mask_logits=masks[-1],
            boxes=self.normalized_boxes(masks[-1]),
            objectness=self.objectness(cls[-1]),
            cls=cls,
            masks=masks,
        )

    @staticmethod
    def objectness(cls_logits: Tensor) -> Tensor:
        """(..., 2) logits -> (...,) foreground probability."""
        return cls_logits.softmax(-1)[..., 0]

    @staticmethod
    def normalized_boxes(mask_logits: Tensor) -> Tensor:
        """``(cx, cy, w, h)`` in [0, 1] of the mask grid (N, Q, 4) from mask
        logits (N, Q, h, w), thresholded at probability 0.5 (no
        gradient); an empty mask gives all zeros."""
        h, w = mask_logits.shape[-2:]
        box = masks_to_boxes(mask_logits.detach() > 0)
        box = box / box.new_tensor([w, h, w, h])
        return torch.cat(
            [(box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]],
            dim=-1,
        )

    def _gt(self, data_samples: list, name: str) -> list:
        gts = []
        for i, sample in enumerate(data_samples):
            gt = sample.get('gt_instances', None)
            if gt is None or 'masks' not in gt:
                raise ValueError(
                    f'{name}: sample {i} has no gt_instances.masks: the '
                    'proposal stage trains on instance masks (load them '
                    'with LoadAnnotations(with_mask=True) and pad them with '
                    'DetDataPreprocessor(pad_mask=True))'
                )
            gts.append(
                InstanceData(
                    labels=torch.zeros_like(gt.labels), masks=gt.masks
                )
            )
        return self.head.preprocess_gt(gts, [None] * len(gts))

    def loss(
        self, out: Dict[str, object], data_samples: list, name: str = 'task'
    ) -> Tuple[Dict[str, Tensor], Matches]:
        """Mask2Former's losses of the class-agnostic proposals and the last
        layer's matching.

        Args:
            out (dict): :meth:`forward`'s output.
            data_samples (list): with ``gt_instances`` (labels, masks).
            name (str): the task, for error messages.

        Returns:
            tuple: the loss dict (``loss_cls``, ``loss_mask``,
            ``loss_dice``, ``d{i}.loss_*``) and per image
            ``(pos_inds, pos_assigned_gt_inds)`` (both (P_i,) int64; empty
            for an image without instances).
        """
        gts = self._gt(data_samples, name)
        metas = [s.metainfo for s in data_samples]
        # Record the matching Mask2Former's own loss computes, layer by
        # layer (``get_targets(return_sampling_results=True)`` is broken in
        # mmdet 3.3); the last B calls are the last layer's.
        records: List[object] = []
        single = self.head._get_targets_single

        def recording(*args, **kwargs):
            result = single(*args, **kwargs)
            records.append(result[6])  # the SamplingResult
            return result

        self.head._get_targets_single = recording
        try:
            with rank_local_normalizers(not self.sync_normalizers):
                losses = self.head.loss_by_feat(
                    out['cls'], out['masks'], gts, metas
                )
        finally:
            del self.head._get_targets_single  # the class's method again
        last = records[-len(gts) :]
        matches = [
            (r.pos_inds, r.pos_assigned_gt_inds)
            if len(gt.labels)
            else (gt.labels.new_zeros(0), gt.labels.new_zeros(0))
            for r, gt in zip(last, gts)
        ]
        return losses, matches
