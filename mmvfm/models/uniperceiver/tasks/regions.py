# Copyright (c) mmvfm contributors. All rights reserved.
"""Detection and instance segmentation: the region proposals'
``g(f(region))`` vs the class names.

The proposal stage (``model.proposer``, :class:`RegionProposer` /
:class:`MaskDINOProposer`) gives per image ``Q`` proposals (``queries``,
``boxes``, ``mask_logits``, ``objectness``) and, in training, its own
losses and Hungarian matches; this module picks the matched proposals as
the class objective's inputs (:meth:`RegionTask.loss`), selects the top-k
proposals once (:func:`select_proposals`) and turns the scores into
instances (:func:`instances`).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData
from torch import Tensor

from ..region_proposer import masks_to_boxes
from ..task_cfg import UNIPERCEIVER_TASKS, check_classes, check_positive_ints
from .base import UniPerceiverTask


def select_proposals(proposals: dict, index: Optional[Tensor]) -> dict:
    """``proposals`` with only the proposals ``index`` (N, Q') of each
    image (e.g. the top-k by objectness); all of them when None."""
    if index is None:
        return proposals
    take = index[..., None]
    queries = proposals['queries']
    rows = torch.arange(len(index), device=index.device)[:, None]
    return dict(
        proposals,
        queries=queries.gather(1, take.expand(-1, -1, queries.shape[-1])),
        boxes=proposals['boxes'].gather(1, take.expand(-1, -1, 4)),
        mask_logits=proposals['mask_logits'][rows, index],
        objectness=proposals['objectness'].gather(1, index),
    )


def instances(
    sample,
    scores: Tensor,
    masks: Tensor,
    boxes: Tensor,
    max_per_image: int,
    from_masks: bool,
    with_masks: bool,
) -> InstanceData:
    """One image's ``pred_instances`` at its ``ori_shape`` from the scores
    (Q', K) of its proposals, their mask logits (Q', H_pad, W_pad, upsampled
    to the padded batch) and boxes (Q', 4; normalised cxcywh)
    (:meth:`RegionTask.predict`)."""
    K = scores.shape[-1]
    keep = min(max_per_image, scores.numel())
    top, flat = scores.flatten().topk(keep)
    query, label = flat // K, flat % K
    h, w = sample.metainfo['img_shape'][:2]
    logits = masks[query, :h, :w][None]
    oh, ow = sample.metainfo['ori_shape'][:2]
    logits = F.interpolate(
        logits, size=(oh, ow), mode='bilinear', align_corners=False
    )[0]
    binary = logits > 0
    mask_score = (logits.sigmoid() * binary).flatten(1).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    if from_masks:
        bboxes = masks_to_boxes(binary)
    else:
        bboxes = bbox_cxcywh_to_xyxy(boxes[query])
        bboxes = bboxes * bboxes.new_tensor([w, h, w, h])
        sx, sy = sample.metainfo.get('scale_factor', (1.0, 1.0))
        bboxes = bboxes / bboxes.new_tensor([sx, sy, sx, sy])
        bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, ow)
        bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, oh)
    result = InstanceData(bboxes=bboxes, labels=label, scores=top * mask_score)
    if with_masks:
        result.masks = binary
    return result


@UNIPERCEIVER_TASKS.register_module(['detection', 'instance_segmentation'])
class RegionTask(UniPerceiverTask):
    """Config: ``classes``, ``synonyms``, ``template`` (as
    classification), ``max_per_image`` (default 100) and ``topk``
    (proposals that reach the decoder, default all). Needs the model's
    ``proposer``. Predicts ``pred_instances`` (``bboxes`` xyxy, ``labels``,
    ``scores``, and ``masks`` for instance segmentation) for mmdet's
    ``CocoMetric``."""

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> dict:
        cfg.setdefault('max_per_image', 100)
        cfg.setdefault('topk', None)
        check_positive_ints(name, cfg, ('max_per_image', 'topk'))
        check_classes(name, cfg)
        return cfg

    @classmethod
    def check_model(cls, model, names) -> None:
        if model.proposer is None:
            raise ValueError(
                f'tasks {names}: detection and instance segmentation need '
                'the region proposals (proposer=dict(type="RegionProposer", '
                '...))'
            )
        Q = model.proposer.num_queries
        for n in names:
            topk = model.task_cfgs[n]['topk']
            if topk is not None and topk > Q:
                raise ValueError(
                    f'tasks.{n}.topk={topk} proposals, the proposal '
                    f'stage makes {Q} (its num_queries) per image'
                )

    def uses_collective(self, model) -> bool:
        """When the proposal stage averages its loss normalisers over the
        ranks (its ``sync_normalizers``)."""
        return bool(getattr(model.proposer, 'sync_normalizers', False))

    def loss(self, model, inputs: Tensor, data_samples: list) -> dict:
        """``'loss'``: the NLL of the matched proposals' classes over the
        class names; ``'proposal.<name>'``: the proposal stage's own losses.

        Our choices (the paper is silent): the proposals matched to a
        ground-truth instance by the proposal stage's Hungarian matching
        (last decoder layer) take its class as the target; unmatched
        (background) proposals do not enter the class objective -- the
        stage's objectness loss already pushes them to "no object". A batch
        without instances gives a zero class loss (its proposal losses
        still train "no object").
        """
        task = self.name
        num = len(model.task_cfgs[task]['classes'])
        maps = model.backbone_maps(inputs)
        proposals = model.proposer(maps, data_samples)
        stage_losses, matches = model.proposer.loss(
            proposals, data_samples, name=f'UniPerceiverV2 task {task!r}'
        )
        regions = model.region_outputs(maps, proposals, task)
        picked, targets = [], []
        for i, (pos, gt_index) in enumerate(matches):
            labels = data_samples[i].gt_instances.labels.to(regions.device)
            if len(labels) and not (
                0 <= int(labels.min()) and int(labels.max()) < num
            ):
                raise ValueError(
                    f'UniPerceiverV2: task {task!r} sample {i} has labels '
                    f'{labels.tolist()}, the task {num} class names (does '
                    "the dataset's class list match tasks.{task}.classes?)"
                )
            picked.append(regions[i, pos])
            targets.append(labels[gt_index])
        picked = torch.cat(picked)
        if len(picked) == 0:
            nll = regions.sum() * 0.0
        else:
            targets = torch.cat(targets)
            nll = model.loss_module(
                picked, model.class_candidates(task, targets), targets
            )
        stage = {f'proposal.{k}': v for k, v in stage_losses.items()}
        return dict(loss=nll, **stage)

    @torch.no_grad()
    def predict(self, model, inputs: Tensor, data_samples: list) -> list:
        """Score of (proposal q, class c) (our choice, Mask2Former's
        instance scoring with its class probability replaced):
        ``objectness_q * P(c | q) * mask_score_q``, ``P`` the softmax of
        ``cos / τ`` over the class names, ``mask_score`` the mean mask
        probability inside the binary mask (Mask2Former's). The top
        ``max_per_image`` (proposal, class) pairs are kept (fewer when the
        image has fewer pairs); with ``topk`` only that many proposals,
        the most object-like, reach the decoder. Masks: the logits
        upsampled to the padded batch, cropped to ``img_shape``, resized to
        ``ori_shape``, > 0; boxes: their tight boxes, or, for a stage with a
        box branch (``proposer.box_from_masks`` False: MaskDINO-like), the
        branch's boxes (normalised by ``img_shape``) rescaled to
        ``ori_shape``.
        """
        task = self.name
        cfg = model.task_cfgs[task]
        if not data_samples or 'batch_input_shape' not in (
            data_samples[0].metainfo
        ):
            raise ValueError(
                f'UniPerceiverV2: task {task!r} predicts boxes and masks at '
                "each image's ori_shape: it needs the data samples with "
                "their metainfo ('batch_input_shape', 'img_shape', "
                "'ori_shape'; DetDataPreprocessor sets the first)"
            )
        maps = model.backbone_maps(inputs)
        proposals = model.proposer(maps, data_samples)
        index = None
        if cfg['topk'] is not None:
            index = proposals['objectness'].topk(cfg['topk'], dim=1).indices
        proposals = select_proposals(proposals, index)
        regions = model.region_outputs(maps, proposals, task)
        probs = model.loss_module.logits(
            regions.flatten(0, 1), model.class_candidates(task)
        ).softmax(-1)
        probs = probs.view(*regions.shape[:2], probs.shape[-1])
        pad_h, pad_w = data_samples[0].metainfo['batch_input_shape']
        masks = F.interpolate(
            proposals['mask_logits'],
            size=(pad_h, pad_w),
            mode='bilinear',
            align_corners=False,
        )
        objectness = proposals['objectness']  # N, Q'
        from_masks = getattr(model.proposer, 'box_from_masks', True)
        for i, sample in enumerate(data_samples):
            sample.pred_instances = instances(
                sample,
                objectness[i][:, None] * probs[i],  # Q', K
                masks[i],
                proposals['boxes'][i],
                cfg['max_per_image'],
                from_masks,
                cfg['type'] == 'instance_segmentation',
            )
        return data_samples
