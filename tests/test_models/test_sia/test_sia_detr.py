# Copyright (c) mmvfm contributors. All rights reserved.
"""SiADETR: padding masks, the batch-stride check, the on/off configs
differ only in the fusion, and a Runner train + val iteration of each toy
config on the tiny toy set."""

import glob
import json
import math
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import InstanceData

# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
SIA = osp.join(
    REPO_ROOT, 'configs/sia/sia-detr_r18-w32_sia-neck_1xb8-1200i_toy-coco.py'
)
PLAIN = osp.join(
    REPO_ROOT, 'configs/sia/ms-detr_r18-w32_sia-neck_1xb8-1200i_toy-coco.py'
)


def _small_model_cfg(path):
    """The toy model at quarter width (backbone) for fast unit tests."""
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(
        {
            'model.backbone.base_channels': 16,
            'model.neck.in_channels': [16, 32, 64, 128],
        }
    )
    return cfg


def _samples(img_shapes, batch_shape):
    samples = []
    for h, w in img_shapes:
        s = DetDataSample(
            metainfo=dict(
                img_shape=(h, w),
                ori_shape=(h, w),
                batch_input_shape=batch_shape,
                pad_shape=batch_shape,
                scale_factor=(1.0, 1.0),
            )
        )
        s.gt_instances = InstanceData(
            bboxes=torch.tensor([[4.0, 6.0, 30.0, 28.0]]),
            labels=torch.tensor([2]),
        )
        samples.append(s)
    return samples


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    m = MODELS.build(_small_model_cfg(SIA).model)
    m.init_weights()
    return m


def test_padding_masks(model):
    shapes = [(2, 3), (4, 6), (8, 12), (16, 24)]  # strides 32..4
    samples = _samples([(64, 96), (40, 50)], (64, 96))
    masks = model.padding_masks(shapes, samples, torch.device('cpu'))
    for lvl, (m, (h, w)) in enumerate(zip(masks, shapes)):
        s = 32 >> lvl
        assert m.shape == (2, h, w) and not m[0].any()
        rows, cols = -(-40 // s), -(-50 // s)  # ceil(img / stride)
        assert not m[1, :rows, :cols].any()
        assert m[1, rows:].all() and m[1, :, cols:].all()
        if lvl:  # consistent: a cell is padded iff its 4 children are
            children = m.view(2, h // 2, 2, w // 2, 2).all(4).all(2)
            assert torch.equal(children, masks[lvl - 1])
    same = _samples([(64, 96)] * 2, (64, 96))
    assert model.padding_masks(shapes, same, torch.device('cpu')) is None


def test_batch_must_be_a_multiple_of_the_coarsest_stride(model):
    with pytest.raises(ValueError, match='pad_size_divisor'):
        model.padding_masks(
            [(4, 4), (8, 8)], _samples([(100, 100)], (100, 100)), 'cpu'
        )
    divisor = model.data_preprocessor.pad_size_divisor
    model.data_preprocessor.pad_size_divisor = 16
    try:
        with pytest.raises(ValueError, match=r'pad_size_divisor \(now 16\)'):
            model.padding_masks(
                [(2, 2), (4, 4)], _samples([(64, 64)], (64, 64)), 'cpu'
            )
    finally:
        model.data_preprocessor.pad_size_divisor = divisor


def test_loss_predict_and_fusion_gradient(model):
    # a non-square batch, the second image padded
    samples = _samples([(64, 96), (48, 70)], (64, 96))
    inputs = torch.randn(2, 3, 64, 96)
    model.train()
    losses = model.loss(inputs, samples)
    assert {'loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    theta = model.decoder.layers[0].cross_attn.fusion_theta
    assert theta.shape == (3, 8) and (theta.grad != 0).any()
    model.eval()
    with torch.no_grad():
        results = model.predict(inputs, samples, rescale=True)
    assert results[0].pred_instances.bboxes.shape == (20, 4)


def test_without_encoder_and_fusion_init_survives_init_weights():
    cfg = _small_model_cfg(SIA)
    cfg.model.encoder = None
    m = MODELS.build(cfg.model)
    m.init_weights()
    assert m.encoder is None
    w = m.decoder.layers[2].cross_attn.fusion_weights()
    torch.testing.assert_close(w, torch.full((3, 8), 0.5))
    samples = _samples([(64, 64), (48, 56)], (64, 64))
    losses = m.loss(torch.randn(2, 3, 64, 64), samples)
    assert torch.isfinite(losses['loss_cls'])


def test_on_off_configs_differ_only_in_the_fusion():
    on, off = Config.fromfile(SIA), Config.fromfile(PLAIN)
    cross = on.model.decoder.layer_cfg.cross_attn_cfg
    assert cross.fusion == 'prob'
    assert off.model.decoder.layer_cfg.cross_attn_cfg.fusion is None
    off.model.decoder.layer_cfg.cross_attn_cfg.fusion = 'prob'
    assert on.to_dict() == off.to_dict()
    with torch.device('meta'):
        keys_on = set(MODELS.build(on.model).state_dict())
        keys_off = set(MODELS.build(Config.fromfile(PLAIN).model).state_dict())
    assert keys_on - keys_off == {
        f'decoder.layers.{i}.cross_attn.fusion_theta' for i in range(3)
    }
    assert not keys_off - keys_on


def _tiny_cfg(path, toy_root, work_dir, name, max_iters=2):
    from conftest import shrink_toy_run

    cfg = _small_model_cfg(path)
    root = shrink_toy_run(cfg, toy_root, work_dir, name, max_iters, 4)
    ann_val = root + 'annotations/instances_val.json'
    cfg.merge_from_dict(
        {'val_evaluator.ann_file': ann_val, 'test_evaluator.ann_file': ann_val}
    )
    return cfg


@pytest.mark.parametrize('path', [SIA, PLAIN], ids=['sia', 'plain'])
def test_runner_train_val_iteration(path, toy_root, tmp_path):
    name = 'sia_runner_' + osp.basename(path)[:7]
    cfg = _tiny_cfg(path, toy_root, str(tmp_path / name), name)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    (scalars,) = glob.glob(
        osp.join(str(tmp_path / name), '*', 'vis_data', 'scalars.json')
    )
    with open(scalars) as f:
        entries = [json.loads(line) for line in f]
    train = [e for e in entries if 'loss' in e]
    assert len(train) == 2 and all(e['loss'] > 0 for e in train)
    assert len([e for e in entries if 'coco/bbox_mAP' in e]) == 1


def test_reference_points_anchor_the_boxes():
    """with_reference: the decoder's query position is the learned one plus
    the sine encoding of each query's reference point, and the head's boxes
    are offsets from it (zeroing the head's regression gives the reference
    as the box centre)."""
    from mmdet.models.layers.transformer import coordinate_to_encoding

    cfg = _small_model_cfg(SIA)
    cfg.model.with_reference = True
    cfg.model.with_box_refine = False
    cfg.model.bbox_head = dict(
        type='ConditionalDETRHead',
        **{
            k: v
            for k, v in cfg.model.bbox_head.items()
            if k not in ('type', 'share_pred_layer', 'num_pred_layer')
            and k != 'as_two_stage'
        },
    )
    cfg.model.positional_encoding.merge(
        dict(temperature=10000, scale=6.283185307179586)
    )
    m = MODELS.build(cfg.model)
    m.init_weights()
    seen = {}
    m.decoder.layers[0].register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(pos=kwargs['query_pos']),
        with_kwargs=True,
    )
    samples = _samples([(64, 64), (48, 56)], (64, 64))
    inputs = torch.randn(2, 3, 64, 64)
    losses = m.loss(inputs, samples)
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))
    learned = m.query_embedding.weight[None].expand(2, -1, -1)
    ref = m.ref_point_head(learned).sigmoid()
    expected = learned + coordinate_to_encoding(ref, num_feats=64)
    torch.testing.assert_close(seen['pos'], expected)
    for p in (m.bbox_head.fc_reg.weight, m.bbox_head.fc_reg.bias):
        torch.nn.init.zeros_(p)
    m.eval()
    with torch.no_grad():
        feats = m.extract_feat(inputs)
        outs = m.forward_transformer(feats, samples)
        cls, boxes = m.bbox_head(**outs)
    # (num_layers, B, Nq, 4): (cx, cy) = the reference, w = h = 0.5
    torch.testing.assert_close(boxes[-1][..., :2], outs['references'])
    assert torch.allclose(boxes[-1][..., 2:], torch.tensor(0.5))
    # the plain DETR head cannot take references
    cfg.model.bbox_head.type = 'DETRHead'
    with pytest.raises(ValueError, match='needs a head that takes'):
        MODELS.build(cfg.model)


def _refine_cfg():
    cfg = _small_model_cfg(PLAIN)
    cfg.model.with_box_refine = True
    cfg.model.bbox_head.merge(
        dict(
            type='DeformableDETRHead',
            share_pred_layer=False,
            num_pred_layer=3,
            as_two_stage=False,
        )
    )
    return cfg


def test_box_refinement_follows_each_layers_box():
    """with_box_refine: layer l's query position is the learned one plus
    the sine encoding of its reference centre; reference l+1 is layer l's
    predicted box (detached); losses and predictions run."""
    from mmdet.models.layers.transformer import coordinate_to_encoding

    torch.manual_seed(0)
    m = MODELS.build(_refine_cfg().model)
    m.init_weights()
    seen = []
    for layer in m.decoder.layers:
        layer.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(
                (kwargs['query_pos'], kwargs['query_sine_pos'])
            ),
            with_kwargs=True,
        )
    samples = _samples([(64, 96), (48, 70)], (64, 96))
    inputs = torch.randn(2, 3, 64, 96)
    m.train()
    losses = m.loss(inputs, samples)
    assert {'loss_cls', 'd0.loss_iou', 'd1.loss_bbox'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    # every layer's regression branch learns (the head is unshared)
    for branch in m.bbox_head.reg_branches:
        assert branch[-1].weight.grad.abs().sum() > 0
    # the head's last layers start at zero (no box moves): perturb them
    for branch in m.bbox_head.reg_branches:
        torch.nn.init.normal_(branch[-1].weight, std=0.1)
    m.eval()
    seen.clear()
    with torch.no_grad():
        outs = m.forward_transformer(m.extract_feat(inputs), samples)
        _, boxes = m.bbox_head(**outs)
    refs = outs['references']
    assert len(refs) == 4 and refs[0].shape == (2, 20, 2)
    assert all(r.shape == (2, 20, 4) for r in refs[1:])
    learned = m.query_embedding.weight[None].expand(2, -1, -1)
    torch.testing.assert_close(refs[0], m.ref_point_head(learned).sigmoid())
    for lid, (pos, sine) in enumerate(seen):
        expected = coordinate_to_encoding(
            refs[lid][..., :2], num_feats=64, temperature=20, scale=4 * math.pi
        )
        torch.testing.assert_close(sine, expected)
        torch.testing.assert_close(pos, learned + expected)
        # the next reference is this layer's box, as the head predicts it
        torch.testing.assert_close(refs[lid + 1], boxes[lid])
    # the boxes move: the references differ from layer to layer
    assert not torch.allclose(refs[1], refs[2])
    results = m.predict(inputs, samples, rescale=True)
    assert results[0].pred_instances.bboxes.shape == (20, 4)
    # the references are detached: the first layer's box does not get
    # gradients through the second layer's reference
    m.train()
    outs = m.forward_transformer(m.extract_feat(inputs), samples)
    assert not outs['references'][1].requires_grad


def test_box_refinement_build_errors():
    cfg = _refine_cfg()
    cfg.model.with_reference = False
    with pytest.raises(ValueError, match='needs with_reference=True'):
        MODELS.build(cfg.model)
    cfg = _refine_cfg()
    cfg.model.bbox_head.num_pred_layer = 6
    with pytest.raises(ValueError, match='num_pred_layer=3'):
        MODELS.build(cfg.model)
    cfg = _refine_cfg()
    cfg.model.bbox_head.share_pred_layer = True
    with pytest.raises(ValueError, match='unshared regression branch'):
        MODELS.build(cfg.model)
    cfg = _small_model_cfg(PLAIN)
    cfg.model.bbox_head.type = 'ConditionalDETRHead'  # no branches
    for key in ('share_pred_layer', 'num_pred_layer', 'as_two_stage'):
        cfg.model.bbox_head.pop(key)
    with pytest.raises(ValueError, match='DeformableDETRHead'):
        MODELS.build(cfg.model)


def test_reference_encoding_is_the_keys_and_spatial_init():
    """encode_points uses the positional encoding's temperature and scale:
    a point at a cell centre is encoded as that cell's key position; the
    spatial modulation starts at spatial_init; an unnormalised encoding
    is refused with references."""
    cfg = _small_model_cfg(PLAIN)
    cfg.model.positional_encoding.merge(
        dict(temperature=20, scale=4 * math.pi)
    )
    cfg.model.decoder.layer_cfg.cross_attn_cfg.spatial_init = 4.0
    m = MODELS.build(cfg.model)
    m.init_weights()
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    key_pos = m.positional_encoding(mask)  # [1, C, 8, 8]
    i, j = 5, 2  # row (y), column (x)
    centre = torch.tensor([[[(j + 0.5) / 8, (i + 0.5) / 8]]])  # (cx, cy)
    torch.testing.assert_close(
        m.encode_points(centre)[0, 0], key_pos[0, :, i, j]
    )
    for layer in m.decoder.layers:
        bias = layer.cross_attn.spatial_proj.bias
        torch.testing.assert_close(bias, torch.full_like(bias, 4.0))
    cfg.model.positional_encoding.normalize = False
    with pytest.raises(ValueError, match='normalize=True'):
        MODELS.build(cfg.model)


def _initial_windows(pe_cfg, spatial_init):
    """Rows (of 32) holding half the attention mass of each y-frequency
    head at init, for a reference at the centre of a 32 x 32 level, with
    the content projections zeroed (the spatial term alone)."""
    from mmdet.models.layers import SinePositionalEncoding
    from mmdet.models.layers.transformer import coordinate_to_encoding

    from mmvfm.models.sia.sia_attention import SiAMultiScaleAttention

    cross = dict(Config.fromfile(SIA).model.decoder.layer_cfg.cross_attn_cfg)
    cross.update(num_levels=1, fusion=None, spatial_init=spatial_init)
    attn = SiAMultiScaleAttention(**cross).double()
    attn.init_weights()
    for proj in (attn.q_proj, attn.k_proj):
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    pe = SinePositionalEncoding(**pe_cfg)
    C, n = attn.embed_dims, 32
    key_pos = pe(None, input=torch.zeros(1, C, n, n)).double()
    key_pos = key_pos.flatten(2).transpose(1, 2)
    ref = torch.full((1, 1, 2), (n // 2 + 0.5) / n, dtype=torch.float64)
    sine = coordinate_to_encoding(
        ref, C // 2, temperature=pe.temperature, scale=pe.scale
    )
    _, maps = attn(
        torch.zeros(1, 1, C, dtype=torch.float64),
        torch.zeros(1, n * n, C, dtype=torch.float64),
        key_pos=key_pos,
        spatial_shapes=[(n, n)],
        query_sine_pos=sine,
        return_attn=True,
    )
    rows = maps[0][0, :, 0].sum(-1)  # [H, 32]: mass per row
    mass = rows.sort(-1, descending=True).values.cumsum(-1)
    return ((mass < 0.5).sum(-1) + 1)[: attn.num_heads // 2].tolist()


def test_toy_config_starts_with_local_attention():
    """The toy configs' encoding (temperature 20, scale 4 pi) and
    spatial_init=4 start every y-frequency head with a window from ~1/10
    to ~1/2 of the image; DETR's encoding with lambda = 1 starts nearly
    uniform (a uniform map needs 16 of 32 rows for half its mass)."""
    toy = dict(Config.fromfile(SIA).model.positional_encoding)
    toy_init = Config.fromfile(SIA).model.decoder.layer_cfg
    toy_init = toy_init.cross_attn_cfg.spatial_init
    windows = _initial_windows(toy, toy_init)
    assert windows == sorted(windows) and windows[0] <= 3
    assert windows[-1] < 16
    detr = dict(num_feats=64, normalize=True, offset=-0.5)
    assert min(_initial_windows(detr, 1.0)) >= 12
