# Copyright (c) mmvfm contributors. All rights reserved.
"""The MaskDINO-like proposal stage of the Uni-Perceiver v2 COCO configs:
mask losses by hand, the interface it shares with RegionProposer, DINO's
losses plus the masks' on the matched queries, boxes from the box branch,
and the bad inputs (a class-specific head, images too small for the query
selection)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData
from test_region_tasks import CLASSES, _cfg, tokenizer_file  # noqa: F401

from mmvfm.models.uniperceiver import mask_losses
from mmvfm.utils import register_all_modules

pytestmark = pytest.mark.usefixtures('one_thread')
register_all_modules()

Q = 8
SIZE = 64


def _dino(in_channels=(16, 16), num_queries=Q, num_classes=1, d=256):
    return dict(
        type='MaskDINOProposer',
        detector=dict(
            type='DINO',
            num_queries=num_queries,
            with_box_refine=True,
            as_two_stage=True,
            neck=dict(
                type='ChannelMapper',
                in_channels=list(in_channels),
                kernel_size=1,
                out_channels=d,
                act_cfg=None,
                norm_cfg=dict(type='GN', num_groups=32),
                num_outs=len(in_channels) + 1,
            ),
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=d,
                        num_heads=2,
                        num_levels=len(in_channels) + 1,
                        num_points=2,
                        dropout=0.0,
                    ),
                    ffn_cfg=dict(
                        embed_dims=d, feedforward_channels=64, ffn_drop=0.0
                    ),
                ),
            ),
            decoder=dict(
                num_layers=2,
                return_intermediate=True,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=d, num_heads=2, dropout=0.0),
                    cross_attn_cfg=dict(
                        embed_dims=d,
                        num_heads=2,
                        num_levels=len(in_channels) + 1,
                        num_points=2,
                        dropout=0.0,
                    ),
                    ffn_cfg=dict(
                        embed_dims=d, feedforward_channels=64, ffn_drop=0.0
                    ),
                ),
                post_norm_cfg=None,
            ),
            positional_encoding=dict(
                num_feats=d // 2, normalize=True, offset=0.0, temperature=20
            ),
            bbox_head=dict(
                type='DINOHead',
                num_classes=num_classes,
                sync_cls_avg_factor=True,
                loss_cls=dict(
                    type='FocalLoss',
                    use_sigmoid=True,
                    gamma=2.0,
                    alpha=0.25,
                    loss_weight=1.0,
                ),
                loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                loss_iou=dict(type='GIoULoss', loss_weight=2.0),
            ),
            dn_cfg=dict(
                label_noise_scale=0.5,
                box_noise_scale=1.0,
                group_cfg=dict(
                    dynamic=True, num_groups=None, num_dn_queries=6
                ),
            ),
            train_cfg=dict(
                assigner=dict(
                    type='HungarianAssigner',
                    match_costs=[
                        dict(type='FocalLossCost', weight=2.0),
                        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                        dict(type='IoUCost', iou_mode='giou', weight=2.0),
                    ],
                )
            ),
            test_cfg=dict(max_per_img=Q),
        ),
    )


def _samples(boxes_per_image, labels_per_image, ori=(SIZE, SIZE)):
    out = []
    for boxes, labels in zip(boxes_per_image, labels_per_image):
        s = DetDataSample(
            metainfo=dict(
                img_shape=(SIZE, SIZE),
                ori_shape=ori,
                batch_input_shape=(SIZE, SIZE),
                pad_shape=(SIZE, SIZE),
                scale_factor=(SIZE / ori[1], SIZE / ori[0]),
            )
        )
        masks = torch.zeros(len(boxes), SIZE, SIZE, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes):
            m[y1:y2, x1:x2] = 1
        s.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long),
            masks=BitmapMasks(masks.numpy(), SIZE, SIZE),
        )
        out.append(s)
    return out


def _feats(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 16, SIZE // 8, SIZE // 8, generator=g),
        torch.randn(n, 16, SIZE // 16, SIZE // 16, generator=g),
    )


def test_mask_losses_by_hand():
    pred = torch.tensor(
        [[[0.5, -1.0], [2.0, 0.0]], [[-0.3, 0.7], [1.5, -2.0]]],
        dtype=torch.float64,
    )
    target = torch.tensor(
        [[[1.0, 0.0], [1.0, 0.5]], [[0.0, 1.0], [0.0, 0.0]]],
        dtype=torch.float64,
    )
    bce, dice = mask_losses(pred, target, num=4.0)
    want_bce, want_dice = 0.0, 0.0
    for p, t in zip(pred, target):
        s = torch.sigmoid(p)
        want_bce += float(
            (-(t * torch.log(s) + (1 - t) * torch.log(1 - s))).mean()
        )
        want_dice += 1 - (2 * float((s * t).sum()) + 1) / (
            float(s.sum()) + float(t.sum()) + 1
        )
    assert float(bce) == pytest.approx(want_bce / 4, rel=1e-12)
    assert float(dice) == pytest.approx(want_dice / 4, rel=1e-12)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='num_classes must be 1'):
        MODELS.build(_dino(num_classes=80))
    with pytest.raises(ValueError, match='embed_dims 256 only'):
        MODELS.build(_dino(d=128))
    proposer = MODELS.build(_dino(num_queries=200)).eval()
    # 8x8 + 4x4 + 2x2 = 84 encoder tokens < 200 proposals
    with pytest.raises(ValueError, match=r'84 encoder tokens.*200 proposals'):
        proposer(_feats(), _samples([[(0, 0, 8, 8)]] * 2, [[0]] * 2))


def test_interface_losses_and_matching():
    torch.manual_seed(0)
    proposer = MODELS.build(_dino())
    proposer.train()
    samples = _samples(
        [[(0, 0, 16, 16), (32, 32, 60, 60)], [(8, 8, 40, 24)]], [[3, 0], [2]]
    )
    out = proposer(_feats(), samples)
    nd = out['num_dn']
    assert nd > 0  # denoising queries in training, in front
    assert out['queries'].shape == (2, Q, 256)
    assert out['mask_logits'].shape == (2, Q, SIZE // 8, SIZE // 8)
    head = proposer.detector.bbox_head
    L = len(out['cls_all'])
    # the queries are what the last layer's branches read
    assert torch.allclose(
        head.cls_branches[L - 1](out['queries']), out['cls_all'][-1][:, nd:]
    )
    assert torch.equal(
        out['objectness'], out['cls_all'][-1][:, nd:, 0].sigmoid()
    )
    assert torch.equal(out['boxes'], out['box_all'][-1][:, nd:])
    # labels given to DINO are all foreground (its dn embedding has 1 class)
    assert all(int(s.gt_instances.labels.max()) == 0 for s in out['samples'])

    losses, matches = proposer.loss(out, samples)
    for key in (
        'loss_cls',
        'loss_bbox',
        'loss_iou',
        'enc_loss_cls',
        'dn_loss_cls',
        'loss_mask',
        'loss_dice',
    ):
        assert key in losses and torch.isfinite(losses[key]), key
    assert [sorted(g.tolist()) for _, g in matches] == [[0, 1], [0]]
    # the mask losses recomputed on the matched pairs
    preds, targets = [], []
    for i, (pos, gt) in enumerate(matches):
        t = samples[i].gt_instances.masks.to_tensor(torch.float32, 'cpu')
        t = F.interpolate(t[gt][:, None], size=(8, 8), mode='bilinear')[:, 0]
        preds.append(out['mask_logits'][i, pos])
        targets.append(t)
    bce, dice = mask_losses(torch.cat(preds), torch.cat(targets), 3.0)
    assert torch.allclose(losses['loss_mask'], 5.0 * bce)
    assert torch.allclose(losses['loss_dice'], 5.0 * dice)
    sum(losses.values()).backward()
    assert proposer.pixel_head[0].weight.grad.abs().sum() > 0


def test_images_without_instances():
    torch.manual_seed(0)
    proposer = MODELS.build(_dino()).train()
    samples = _samples([[], []], [[], []])
    out = proposer(_feats(), samples)
    losses, matches = proposer.loss(out, samples)
    assert all(len(p) == 0 for p, _ in matches)
    assert losses['loss_mask'].item() == 0.0
    assert all(torch.isfinite(v) for v in losses.values())


def test_in_the_model_boxes_come_from_the_box_branch(tokenizer_file):
    cfg = _cfg(tokenizer_file)
    cfg['proposer'] = _dino(in_channels=(16,))
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    ori = (48, 80)
    samples = _samples([[(0, 0, 16, 16)]], [[1]], ori=ori)
    images = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model.proposer(model.backbone_maps(images), samples)
    inst = model.predict(images, copy.deepcopy(samples), 'det')[0]
    inst = inst.pred_instances
    K = len(CLASSES)
    # each kept pair's box is its proposal's branch box at ori_shape
    boxes = bbox_cxcywh_to_xyxy(out['boxes'][0]) * SIZE
    boxes = boxes / boxes.new_tensor([SIZE / 80, SIZE / 48] * 2)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 80)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 48)
    for box in inst.bboxes:
        q = int(((boxes - box).abs().sum(-1)).argmin())
        assert torch.allclose(boxes[q], box, atol=1e-4)
    assert len(inst) == min(10, Q * K)
    model.train()
    losses = model.loss(images, samples, 'det')
    assert 'det.proposal.loss_mask' in losses
    assert 'det.proposal.dn_loss_bbox' in losses
    assert torch.isfinite(losses['det.loss'])
