# Copyright (c) mmvfm contributors. All rights reserved.
"""A MaskDINO-like region proposal stage for Uni-Perceiver v2's COCO
configs: mmdet's DINO with one foreground class plus a mask branch.

The paper's proposal network is MaskDINO-like with binary fg/bg scores;
mmdet has no MaskDINO. Built from mmdet's parts:

- taken unchanged: :class:`mmdet.models.DINO` (neck, deformable encoder,
  query selection of the top ``num_queries`` encoder tokens, contrastive
  denoising queries, decoder with box refinement) and its ``DINOHead``
  losses (focal class loss, L1 + GIoU boxes, encoder and denoising terms),
  with ``num_classes=1``;
- added (MaskDINO's idea, our layers): a pixel embedding of the encoder's
  finest level (its memory reshaped to a map, 3x3 conv + GroupNorm + ReLU
  + 1x1 conv) and a 3-layer MLP mask embedding of each query; mask logits
  = their dot product (stride of the finest level). Mask losses (sigmoid
  cross-entropy and dice, Mask2Former's weights 5 / 5) on the last
  decoder layer's matched queries, the ground-truth masks resized to the
  mask grid (bilinear).

Not MaskDINO's: no mask term in the matching cost (DINO's class + box
costs match), no masks on the intermediate layers or the denoising
queries, no unified query selection from masks, no stride-4 fusion with
the backbone in the pixel embedding.

Interface (:class:`RegionProposer`'s): ``forward`` returns ``queries``
(the last decoder layer's matching queries), ``mask_logits``, ``boxes``
(the box branch's ``(cx, cy, w, h)`` normalised by ``img_shape``, as DINO's,
no gradient), ``objectness`` (sigmoid of the foreground score); ``loss``
returns the losses and the last layer's matching.
"""

import copy
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.detectors import DINO
from mmdet.models.layers import MLP
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..common.local_normalizer import rank_local_normalizers

Matches = List[Tuple[Tensor, Tensor]]


def mask_losses(
    pred: Tensor, target: Tensor, num: float
) -> Tuple[Tensor, Tensor]:
    """Sigmoid cross-entropy and dice of matched masks.

    Args:
        pred (Tensor): (P, H, W) mask logits.
        target (Tensor): (P, H, W) targets in [0, 1].
        num (float): the normaliser (matched masks in the batch, >= 1).

    Returns:
        tuple: ``sum_p mean_hw BCE(pred_p, target_p) / num`` and
        ``sum_p (1 - (2 sum p t + 1) / (sum p + sum t + 1)) / num``
        (``p = sigmoid(pred)``; Mask2Former's naive dice, eps 1).
    """
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    bce = bce.flatten(1).mean(1).sum() / num
    p = pred.sigmoid().flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce, dice.sum() / num


@MODELS.register_module()
class MaskDINOProposer(BaseModule):
    """Args:
    detector (dict): an mmdet ``DINO`` config without backbone (its neck,
        encoder, decoder, ``bbox_head`` with ``num_classes=1``,
        ``dn_cfg``, ``train_cfg`` with the assigner).
    loss_mask (float): weight of the masks' cross-entropy.
    loss_dice (float): weight of the masks' dice loss.
    sync_normalizers (bool): average the loss normalisers over the ranks
        (mmdet's ``reduce_mean``, a collective; default). ``False``: each
        rank's own, required under the multi-task loop's ``'mixed'``
        sampling, where the ranks train different tasks.
    init_cfg (dict, optional): initialisation config.
    """

    box_from_masks = False  # DINO's box branch gives the boxes

    def __init__(
        self,
        detector: dict,
        loss_mask: float = 5.0,
        loss_dice: float = 5.0,
        sync_normalizers: bool = True,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.sync_normalizers = bool(sync_normalizers)
        detector = ConfigDict(copy.deepcopy(detector))
        if detector.get('backbone') not in (None, {}):
            raise ValueError(
                'MaskDINOProposer: detector.backbone must be unset (the '
                "backbone is the model's)"
            )
        classes = detector.get('bbox_head', {}).get('num_classes', 1)
        if classes != 1:
            raise ValueError(
                'MaskDINOProposer: detector.bbox_head.num_classes must be 1 '
                f'(class-agnostic proposals), got {classes}'
            )
        detector.bbox_head.num_classes = 1
        # DINOHead's width defaults to 256: take the encoder's when unset
        dims = (
            detector.get('encoder', {})
            .get('layer_cfg', {})
            .get('self_attn_cfg', {})
            .get('embed_dims')
        )
        if dims is not None:
            detector.bbox_head.setdefault('embed_dims', dims)
        dn = detector.get('dn_cfg')
        if dn is not None:
            dn.pop('num_classes', None)  # DINO sets it from the head
        detector.backbone = dict(type='FeaturePassThrough')
        detector.pop('data_preprocessor', None)
        self.detector = MODELS.build(detector)
        if not isinstance(self.detector, DINO):
            raise TypeError(
                'MaskDINOProposer: detector must build an mmdet DINO, got '
                f'{type(self.detector).__name__}'
            )
        C = self.detector.embed_dims
        if C != 256:
            # DinoTransformerDecoder encodes its reference boxes with
            # coordinate_to_encoding's default 128 sine features per axis
            # pair, for a 256-wide ref_point_head: other widths fail there
            raise ValueError(
                'MaskDINOProposer: mmdet DINO works at embed_dims 256 only '
                f'(its decoder position encoding is fixed), got {C}'
            )
        if self.detector.bbox_head.embed_dims != C:
            raise ValueError(
                'MaskDINOProposer: detector.bbox_head.embed_dims '
                f'{self.detector.bbox_head.embed_dims} != the transformer '
                f'width {C}'
            )
        self.num_queries = self.detector.num_queries
        self.query_dims = C
        self.pixel_head = nn.Sequential(
            nn.Conv2d(C, C, 3, padding=1),
            nn.GroupNorm(min(32, C), C),
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 1),
        )
        self.mask_embed = MLP(C, C, C, 3)
        self.loss_mask = float(loss_mask)
        self.loss_dice = float(loss_dice)

    @staticmethod
    def _agnostic(data_samples: Sequence) -> list:
        """The samples with every instance relabelled foreground (DINO's
        denoising queries embed the labels)."""
        out = []
        for sample in data_samples:
            new = DetDataSample(metainfo=sample.metainfo)
            gt = sample.get('gt_instances', None)
            if gt is not None:
                new.gt_instances = InstanceData(
                    bboxes=gt.bboxes, labels=torch.zeros_like(gt.labels)
                )
            out.append(new)
        return out

    def forward(
        self, feats: Sequence[Tensor], data_samples: list
    ) -> Dict[str, object]:
        """Args:
            feats (Sequence[Tensor]): the backbone's maps (N, C_l, h_l, w_l).
            data_samples (list): the batch's data samples.

        Returns:
            dict: ``queries`` (N, Q, C), ``mask_logits`` (N, Q, h0, w0),
            ``boxes`` (N, Q, 4), ``objectness`` (N, Q) (module doc), and
            for :meth:`loss` ``cls_all`` / ``box_all`` (L, N, Q_total, 1 /
            4, denoising queries first), ``head_inputs`` (DINO's) and
            ``num_dn`` (denoising queries in front).
        """
        det = self.detector
        samples = self._agnostic(data_samples)
        x = det.extract_feat(tuple(feats))
        tokens = sum(int(f.shape[-2] * f.shape[-1]) for f in x)
        if tokens < self.num_queries:
            shapes = [tuple(f.shape[-2:]) for f in x]
            raise ValueError(
                f'MaskDINOProposer: the maps {shapes} give {tokens} encoder '
                f'tokens, fewer than the {self.num_queries} proposals the '
                'query selection keeps (detector.num_queries): the images '
                'are too small for this setting'
            )
        enc_in, dec_in = det.pre_transformer(x, samples)
        enc_out = det.forward_encoder(**enc_in)
        tmp, head_in = det.pre_decoder(**enc_out, batch_data_samples=samples)
        dec_in.update(tmp)
        head_in.update(det.forward_decoder(**dec_in))
        hidden = head_in['hidden_states']  # [L, N, Q_total, C]
        cls_all, box_all = det.bbox_head(hidden, head_in['references'])
        dn_meta = head_in.get('dn_meta')
        nd = dn_meta['num_denoising_queries'] if dn_meta else 0
        queries = hidden[-1][:, nd:]
        N, C = queries.shape[0], queries.shape[-1]
        h0, w0 = (int(v) for v in enc_in['spatial_shapes'][0])
        pix = enc_out['memory'][:, : h0 * w0].transpose(1, 2)
        pix = self.pixel_head(pix.reshape(N, C, h0, w0))
        masks = torch.einsum('nqc,nchw->nqhw', self.mask_embed(queries), pix)
        return dict(
            queries=queries,
            mask_logits=masks,
            boxes=box_all[-1][:, nd:].detach(),
            objectness=cls_all[-1][:, nd:, 0].sigmoid(),
            cls_all=cls_all,
            box_all=box_all,
            head_inputs=head_in,
            num_dn=nd,
            samples=samples,
        )

    def match(self, out: dict, samples: list) -> Matches:
        """The last layer's Hungarian matching (DINO's assigner and costs)
        of the matching queries: per image ``(pos_inds,
        pos_assigned_gt_inds)``."""
        head = self.detector.bbox_head
        nd = out['num_dn']
        cls = out['cls_all'][-1][:, nd:].detach()
        box = out['box_all'][-1][:, nd:].detach()
        matches = []
        for i, sample in enumerate(samples):
            gt = sample.gt_instances
            if len(gt.labels) == 0:
                empty = gt.labels.new_zeros(0)
                matches.append((empty, empty))
                continue
            h, w = sample.metainfo['img_shape'][:2]
            factor = box.new_tensor([w, h, w, h])
            pred = InstanceData(
                scores=cls[i], bboxes=bbox_cxcywh_to_xyxy(box[i]) * factor
            )
            result = head.assigner.assign(
                pred_instances=pred, gt_instances=gt, img_meta=sample.metainfo
            )
            pos = torch.nonzero(result.gt_inds > 0).squeeze(-1)
            matches.append((pos, result.gt_inds[pos] - 1))
        return matches

    def loss(
        self, out: dict, data_samples: list, name: str = 'task'
    ) -> Tuple[Dict[str, Tensor], Matches]:
        """DINO's losses of the class-agnostic proposals, the mask losses of
        the matched queries (keys ``loss_mask``, ``loss_dice``) and the last
        layer's matching."""
        masks = []
        for i, sample in enumerate(data_samples):
            gt = sample.get('gt_instances', None)
            if gt is None or 'masks' not in gt:
                raise ValueError(
                    f'{name}: sample {i} has no gt_instances.masks: the '
                    'proposal stage trains on instance masks (load them '
                    'with LoadAnnotations(with_mask=True) and pad them with '
                    'DetDataPreprocessor(pad_mask=True))'
                )
            masks.append(gt.masks)
        samples = out['samples']
        head_in = out['head_inputs']
        with rank_local_normalizers(not self.sync_normalizers):
            losses = self.detector.bbox_head.loss_by_feat(
                out['cls_all'],
                out['box_all'],
                head_in['enc_outputs_class'],
                head_in['enc_outputs_coord'],
                [s.gt_instances for s in samples],
                [s.metainfo for s in samples],
                head_in['dn_meta'],
            )
        matches = self.match(out, samples)
        logits = out['mask_logits']
        preds, targets = [], []
        for i, (pos, gt_index) in enumerate(matches):
            if len(pos) == 0:
                continue
            target = masks[i].to_tensor(torch.float32, logits.device)
            target = F.interpolate(
                target[gt_index][:, None],
                size=logits.shape[-2:],
                mode='bilinear',
                align_corners=False,
            )[:, 0]
            preds.append(logits[i, pos])
            targets.append(target)
        if preds:
            num = float(sum(len(p) for p in preds))
            bce, dice = mask_losses(torch.cat(preds), torch.cat(targets), num)
        else:
            bce = dice = logits.sum() * 0.0
        losses['loss_mask'] = self.loss_mask * bce
        losses['loss_dice'] = self.loss_dice * dice
        return losses, matches
