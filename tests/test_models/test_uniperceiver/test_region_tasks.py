# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2, part 2: the region proposal stage (class-agnostic
Mask2Former), detection / instance segmentation as candidates over the
class names -- the loss against its equation, the scores against theirs --
and the bad inputs."""

import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks, mask2bbox
from mmengine.config import Config
from mmengine.structures import InstanceData
from test_uni_perceiver_v2 import _cfg as base_cfg
from test_uni_perceiver_v2 import tokenizer_file  # noqa: F401

from mmvfm.models.uniperceiver import masks_to_boxes
from mmvfm.utils import register_all_modules

pytestmark = pytest.mark.usefixtures('one_thread')
register_all_modules()

CLASSES = ['circle', 'square', 'triangle']
SIZE = 64
Q = 6


# the proposal stage of the five-task config, from the same base
# (configs/vit_trunk/_base_/mask2former_head.py), shrunk to test size
M2F_BASE = Config.fromfile(
    osp.join(REPO_ROOT, 'configs/vit_trunk/_base_/mask2former_head.py')
).mask2former_task.detector


def _proposer(**head):
    d = 32
    cfg = copy.deepcopy(M2F_BASE.panoptic_head).to_dict()
    cfg.update(
        in_channels=[d, d, d],
        feat_channels=d,
        out_channels=d,
        num_things_classes=1,
        num_queries=Q,
        positional_encoding=dict(num_feats=d // 2, normalize=True),
    )
    cfg['loss_cls']['class_weight'] = [1.0, 0.1]
    pixel = cfg['pixel_decoder']
    pixel['norm_cfg']['num_groups'] = 8
    pixel['positional_encoding']['num_feats'] = d // 2
    pixel['encoder']['num_layers'] = 1
    pixel['encoder']['layer_cfg']['self_attn_cfg'].update(
        embed_dims=d, num_heads=2, num_points=2
    )
    decoder = cfg['transformer_decoder']
    decoder['num_layers'] = 2
    for layer in (pixel['encoder'], decoder):
        layer['layer_cfg']['ffn_cfg'].update(
            embed_dims=d, feedforward_channels=2 * d
        )
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        decoder['layer_cfg'][attn].update(embed_dims=d, num_heads=2)
    cfg.update(head)
    train_cfg = copy.deepcopy(M2F_BASE.train_cfg).to_dict()
    train_cfg['num_points'] = 64
    return dict(
        type='RegionProposer',
        neck=dict(
            type='SimpleFeaturePyramid',
            in_channels=16,
            out_channels=d,
            scale_factors=(1.0, 0.5),
            num_extra_levels=1,
        ),
        head=cfg,
        train_cfg=train_cfg,
    )


def _cfg(tokenizer_file, proposer=True, **tasks):
    """Part 1's test model (``test_uni_perceiver_v2._cfg``) at ``SIZE`` px
    with one decoder layer, region tasks and the proposal stage."""
    cfg = base_cfg(
        tokenizer_file,
        **(
            tasks
            or dict(
                det=dict(type='detection', classes=CLASSES, max_per_image=10),
                seg=dict(type='instance_segmentation', classes=CLASSES),
            )
        ),
    )
    cfg['backbone']['img_size'] = SIZE
    cfg['decoder']['depth'] = 1
    cfg.update(
        proposer=_proposer() if proposer else None,
        proposal_tokens=dict(num_feats=4, pool_size=7),
    )
    return cfg


def _model(tokenizer_file, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MODELS.build(_cfg(tokenizer_file, **kwargs))
    model.eval()
    return model


def _samples(boxes_per_image, labels_per_image, ori=(SIZE, SIZE)):
    """DetDataSamples with box-shaped instance masks (pixel xyxy)."""
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


def _images(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g)


# ----------------------------------------------------------- the stage
def test_masks_to_boxes_equals_mmdet():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(7, 9, 11, generator=g) > 0.9
    masks[3] = False  # an empty mask: zeros
    assert torch.equal(masks_to_boxes(masks), mask2bbox(masks))
    batched = masks_to_boxes(masks.view(1, 7, 9, 11))
    assert torch.equal(batched[0], mask2bbox(masks))


def test_proposer_is_class_agnostic_and_records_the_last_queries():
    with pytest.raises(ValueError, match='num_things_classes must be 1'):
        MODELS.build(_proposer(num_things_classes=5))
    bad = _proposer()
    bad['head']['loss_cls']['class_weight'] = [1.0] * 5 + [0.1]
    with pytest.raises(ValueError, match='class_weight needs 2'):
        MODELS.build(bad)
    torch.manual_seed(0)
    proposer = MODELS.build(_proposer()).eval()
    feats = (torch.randn(2, 16, SIZE // 8, SIZE // 8),)
    out = proposer(feats, _samples([[(0, 0, 8, 8)]] * 2, [[0]] * 2))
    assert len(out['cls']) == 3 and out['cls'][-1].shape == (2, Q, 2)
    assert out['masks'][-1].shape == (2, Q, SIZE // 8, SIZE // 8)
    # the recorded features are the input of the last class / mask branch
    head = proposer.head
    assert out['queries'].shape == (2, Q, 32)
    assert torch.allclose(head.cls_embed(out['queries']), out['cls'][-1])
    # and not those of an earlier layer
    assert not torch.allclose(head.cls_embed(out['queries']), out['cls'][-2])
    # the interface the model reads
    assert torch.equal(out['mask_logits'], out['masks'][-1])
    assert torch.equal(out['objectness'], out['cls'][-1].softmax(-1)[..., 0])
    assert torch.equal(
        out['boxes'], proposer.normalized_boxes(out['masks'][-1])
    )


def test_normalized_boxes_of_masks():
    logits = torch.full((1, 2, 8, 8), -5.0)
    logits[0, 0, 2:6, 4:8] = 5.0  # x 4..8, y 2..6 of an 8x8 grid
    from mmvfm.models.uniperceiver import RegionProposer

    box = RegionProposer.normalized_boxes(logits)
    assert torch.allclose(box[0, 0], torch.tensor([0.75, 0.5, 0.5, 0.5]))
    assert torch.equal(box[0, 1], torch.zeros(4))  # empty


# ------------------------------------------------------------ the loss
def test_region_loss_is_the_nll_of_the_matched_proposals(
    tokenizer_file, monkeypatch
):
    """With the matching fixed, the task loss is the cross-entropy of
    cos / tau between the matched proposals' decoder outputs and the class
    names, targets the matched ground truths' labels; unmatched proposals
    get no gradient from it."""
    model = _model(tokenizer_file)
    samples = _samples(
        [[(0, 0, 16, 16), (32, 32, 60, 60)], [(8, 8, 40, 24)]], [[2, 0], [1]]
    )
    matches = [
        (torch.tensor([4, 1]), torch.tensor([1, 0])),
        (torch.tensor([3]), torch.tensor([0])),
    ]
    real_loss = model.proposer.loss

    def fixed(out, data_samples, name='task'):
        losses, _ = real_loss(out, data_samples, name)
        return losses, matches

    monkeypatch.setattr(model.proposer, 'loss', fixed)
    captured = {}
    real_outputs = model.region_outputs

    def keep(*args, **kwargs):
        out = real_outputs(*args, **kwargs)
        out.retain_grad()
        captured['regions'] = out
        return out

    monkeypatch.setattr(model, 'region_outputs', keep)
    losses = model.loss(_images(2), samples, 'det')
    regions = captured['regions']
    classes = model.class_candidates('det')
    picked = torch.stack([regions[0, 4], regions[0, 1], regions[1, 3]])
    logits = (
        model.loss_module.scale
        * F.normalize(picked, dim=-1)
        @ F.normalize(classes, dim=-1).t()
    )
    want = F.cross_entropy(logits, torch.tensor([0, 2, 1]))
    assert torch.allclose(losses['det.loss'], want, atol=1e-6)
    stage = [k for k in losses if k.startswith('det.proposal.')]
    assert (
        'det.proposal.loss_mask' in stage
        and 'det.proposal.d0.loss_dice' in stage
    )
    losses['det.loss'].backward()
    rows = regions.grad.abs().sum(-1) > 0
    want_rows = torch.zeros(2, Q, dtype=torch.bool)
    want_rows[0, [1, 4]] = True
    want_rows[1, 3] = True
    assert torch.equal(rows, want_rows)


def test_images_without_instances(tokenizer_file):
    model = _model(tokenizer_file)
    model.train()
    losses = model.loss(_images(2), _samples([[], []], [[], []]), 'det')
    assert losses['det.loss'].item() == 0.0
    assert losses['det.loss'].requires_grad
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k
    assert losses['det.proposal.loss_cls'] > 0  # "no object" still trains


def test_real_matching_pairs_each_instance_once(tokenizer_file):
    model = _model(tokenizer_file)
    samples = _samples([[(0, 0, 16, 16), (32, 32, 60, 60)]], [[2, 0]])
    maps = model.backbone_maps(_images(1))
    out = model.proposer(maps, samples)
    _, matches = model.proposer.loss(out, samples)
    pos, gt = matches[0]
    assert len(pos) == 2 and sorted(gt.tolist()) == [0, 1]
    assert len(set(pos.tolist())) == 2


def test_matches_are_the_ones_mask2formers_loss_used(tokenizer_file):
    """One Hungarian matching per layer and image (none repeated), and the
    returned matches are the last layer's as Mask2Former's loss made them
    (its point sampling is random: a second matching could differ)."""
    model = _model(tokenizer_file)
    samples = _samples(
        [[(0, 0, 16, 16), (32, 32, 60, 60)], [], [(8, 8, 40, 24)]],
        [[2, 0], [], [1]],
    )
    out = model.proposer(model.backbone_maps(_images(3)), samples)
    assigner = model.proposer.head.assigner
    calls = []
    real_assign = assigner.assign

    def assign(*args, **kwargs):
        calls.append(real_assign(*args, **kwargs))
        return calls[-1]

    assigner.assign = assign
    _, matches = model.proposer.loss(out, samples)
    layers = len(out['cls'])
    assert len(calls) == layers * 3
    for (pos, gt), result in zip(matches, calls[-3:]):
        want = torch.nonzero(result.gt_inds > 0).squeeze(-1)
        assert torch.equal(pos, want)
        assert torch.equal(gt, result.gt_inds[want] - 1)
    assert len(matches[1][0]) == 0
    assert '_get_targets_single' not in vars(model.proposer.head)


@pytest.mark.parametrize('sync', [True, False])
def test_proposer_normalizers_sync_or_rank_local(
    tokenizer_file, monkeypatch, sync
):
    """``sync_normalizers=False`` (the 'mixed' ablation config) computes
    the same losses on one rank without any all-reduce; the default calls
    mmdet's reduce_mean (a collective every rank must join)."""
    cfg = _cfg(tokenizer_file)
    cfg['proposer']['sync_normalizers'] = sync
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    samples = _samples([[(0, 0, 16, 16), (32, 32, 60, 60)]], [[2, 0]])
    out = model.proposer(model.backbone_maps(_images(1)), samples)
    torch.manual_seed(1)  # Mask2Former samples its points at random
    local, _ = model.proposer.loss(out, samples)
    reduced = []
    dist = torch.distributed
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_world_size', lambda *a: 1)
    monkeypatch.setattr(
        dist, 'all_reduce', lambda t, *a, **k: reduced.append(t)
    )
    torch.manual_seed(1)
    losses, _ = model.proposer.loss(out, samples)
    assert (len(reduced) > 0) is sync
    assert model.task_uses_collective('det') is sync
    for key, value in local.items():
        assert torch.allclose(losses[key], value), key


# -------------------------------------------------------- prediction
def test_predicted_scores_boxes_and_masks(tokenizer_file):
    """Every kept (proposal, class) pair recomputed: the top pairs by
    objectness x P(class | proposal), scored times the mask score, masks
    at ori_shape, boxes their tight boxes; 'det' has no masks."""
    model = _model(tokenizer_file)
    ori = (48, 80)  # resized from 48 x 80 to 64 x 64
    samples = _samples([[(0, 0, 16, 16)]], [[0]], ori=ori)
    images = _images(1)
    K = len(CLASSES)
    with torch.no_grad():
        maps = model.backbone_maps(images)
        out = model.proposer(maps, samples)
        obj = out['objectness'][0]
        regions = model.region_outputs(maps, out, 'seg')[0]
        probs = model.loss_module.logits(
            regions, model.class_candidates('seg')
        ).softmax(-1)
        mask = F.interpolate(
            out['mask_logits'], size=(SIZE, SIZE), mode='bilinear'
        )
        mask = F.interpolate(mask, size=ori, mode='bilinear')[0]
    binary = mask > 0
    mscore = (mask.sigmoid() * binary).flatten(1).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    for task, keep in (('seg', Q * K), ('det', 10)):
        inst = model.predict(images, copy.deepcopy(samples), task)[0]
        inst = inst.pred_instances
        top, flat = (obj[:, None] * probs).flatten().topk(keep)
        q, c = flat // K, flat % K
        assert len(inst) == keep
        assert torch.equal(inst.labels, c)
        assert torch.allclose(inst.scores, top * mscore[q], atol=1e-6)
        assert torch.equal(inst.bboxes, masks_to_boxes(binary[q]))
        if task == 'seg':
            assert torch.equal(inst.masks, binary[q])
        else:
            assert 'masks' not in inst


def test_topk_proposals_reach_the_decoder(tokenizer_file):
    model = _model(
        tokenizer_file,
        det=dict(type='detection', classes=CLASSES, topk=2, max_per_image=4),
    )
    samples = _samples([[(0, 0, 16, 16)]], [[0]])
    inst = model.predict(_images(1), samples, 'det')[0].pred_instances
    assert len(inst) == 4  # of 2 proposals x 3 classes


# ---------------------------------------------------------- bad input
def test_bad_region_tasks(tokenizer_file):
    with pytest.raises(ValueError, match='need the region proposals'):
        MODELS.build(_cfg(tokenizer_file, proposer=False))
    with pytest.raises(ValueError, match=r'tasks\.det\.topk=7 proposals.*6'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                det=dict(type='detection', classes=CLASSES, topk=7),
            )
        )
    with pytest.raises(ValueError, match=r'tasks\.det\.max_per_image'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                det=dict(type='detection', classes=CLASSES, max_per_image=0),
            )
        )
    with pytest.raises(ValueError, match=r'tasks\.det\.classes: an empty'):
        MODELS.build(
            _cfg(tokenizer_file, det=dict(type='detection', classes=[]))
        )
    model = _model(tokenizer_file)
    samples = _samples([[(0, 0, 16, 16)]], [[3]])  # 3 class names: 0..2
    with pytest.raises(ValueError, match="task 'det' sample 0 has labels"):
        model.loss(_images(1), samples, 'det')
    with pytest.raises(ValueError, match='needs the data samples'):
        model.predict(_images(1), None, 'det')
    samples = _samples([[(0, 0, 16, 16)]], [[0]])
    del samples[0].gt_instances.masks
    with pytest.raises(ValueError, match=r'with_mask=True'):
        model.loss(_images(1), samples, 'det')


def test_dataset_classes_must_be_the_candidates(tokenizer_file):
    model = _model(tokenizer_file)
    model.check_task_data('det', dict(classes=tuple(CLASSES)))
    model.check_task_data('det', dict())  # declares none: passes
    with pytest.raises(
        ValueError,
        match="task 'seg'.*index 0: dataset 'triangle', candidates 'circle'",
    ):
        model.check_task_data('seg', dict(classes=CLASSES[::-1]))
    with pytest.raises(
        ValueError, match="index 3: dataset 'ring', candidates none"
    ):
        model.check_task_data('seg', dict(classes=CLASSES + ['ring']))


def test_classes_of_a_registered_dataset(tokenizer_file):
    from mmdet.datasets import CocoDataset

    cfg = _cfg(
        tokenizer_file,
        det=dict(type='detection', classes='CocoDataset'),
        cls=dict(type='classification', classes='mmpretrain.ImageNet'),
    )
    model = MODELS.build(cfg)
    assert model.task_cfgs['det']['classes'] == list(
        CocoDataset.METAINFO['classes']
    )
    names = model.task_cfgs['cls']['classes']
    assert len(names) == 1000 and len(set(names)) == 1000
    assert 'crane' in names and 'crane (2)' in names  # bird, machine
    from mmpretrain.datasets import ImageNet

    # the dataset's own (repeating) list passes the build-time check
    model.check_task_data('cls', dict(classes=ImageNet.METAINFO['classes']))
    first = MODELS.build(
        _cfg(
            tokenizer_file,
            cls=dict(
                type='classification',
                classes='mmpretrain.ImageNet',
                synonyms='first',
            ),
        )
    )
    names = first.task_cfgs['cls']['classes']
    assert names[2] == 'great white shark' and len(set(names)) == 1000
    first.check_task_data('cls', dict(classes=ImageNet.METAINFO['classes']))
    with pytest.raises(ValueError, match=r'tasks\.cls\.synonyms must be'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                cls=dict(type='classification', classes=CLASSES, synonyms='x'),
            )
        )
    with pytest.raises(ValueError, match=r"tasks\.det\.classes='NoSuch'"):
        MODELS.build(
            _cfg(tokenizer_file, det=dict(type='detection', classes='NoSuch'))
        )


def test_grad_candidates_keep_the_likelihood_exact(tokenizer_file):
    """grad_candidates: every candidate in the softmax, gradient through the
    targets plus random others only; the loss value is unchanged."""
    model = _model(tokenizer_file)
    model.task_cfgs['det'].update(grad_candidates=2, candidate_chunk=2)
    table = torch.nn.Parameter(torch.randn(7, 4))
    out = model._candidates(
        lambda i: table[i] * 1.0, 7, 'det', torch.tensor([5])
    )
    assert torch.equal(out, table.detach())
    out.sum().backward()
    rows = table.grad.abs().sum(1) > 0
    assert int(rows.sum()) == 2 and bool(rows[5])
    with torch.no_grad():  # evaluation: chunked, no gradient
        assert torch.equal(
            model._candidates(lambda i: table[i], 7, 'det'), table.detach()
        )
    # through the model: same region loss with 1 or all with gradient
    samples = _samples([[(0, 0, 16, 16), (32, 32, 60, 60)]], [[2, 0]])
    images = _images(1)
    model.task_cfgs['det'].update(grad_candidates=None)
    torch.manual_seed(3)
    full = model.loss(images, samples, 'det')['det.loss']
    model.task_cfgs['det'].update(grad_candidates=1, candidate_chunk=1)
    torch.manual_seed(3)
    part = model.loss(images, samples, 'det')['det.loss']
    assert torch.allclose(full, part, atol=1e-6)
    with pytest.raises(ValueError, match=r'tasks\.det\.grad_candidates'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                det=dict(type='detection', classes=CLASSES, grad_candidates=0),
            )
        )
