# Copyright (c) mmvfm contributors. All rights reserved.
"""GQPosDETR, GQPosConditionalDETR, GQPosDeformableDETR on tiny float64
models built from the toy configs of configs/gqpos/.

- off (``gqpos=None``): the stock detector, same weights, same outputs;
- a stock state dict loads with exactly the ``gqpos.*`` keys missing;
- ``zero_init`` + ``mode='add'``: the re-run decoder loop equals the stock
  decoder (same outputs);
- forward hooks on the decoder layers: ``query_pos[0]`` is the stock one,
  ``query_pos[l+1] == [stock +] MLP_l(sine(box[l]))`` with ``box[l]`` the
  head's prediction from layer ``l``; references as the stock detector's;
- ``detach``: gradient from layer ``l+1`` reaches layer ``l``'s box branch
  through the position only with ``detach=False``.
"""

import copy
import os.path as osp

import pytest
import torch
from mmdet.models.layers.transformer import coordinate_to_encoding
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.structures import InstanceData

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
CFG_DIR = osp.join(REPO_ROOT, 'configs', 'gqpos')
SCHEDULE = '1xb8-500i'
# target -> (stock toy config, extra model fields, GQPos type, width);
# mmdet's Conditional DETR and two-stage Deformable DETR hard-code 128
# sine features per coordinate, i.e. a 256-d transformer.
TARGETS = {
    'detr': ('detr', {}, 'GQPosDETR', 16),
    'conditional_detr': (
        'conditional-detr',
        {},
        'GQPosConditionalDETR',
        256,
    ),
    'deformable_detr': ('deformable-detr', {}, 'GQPosDeformableDETR', 16),
    'deformable_detr_refine': (
        'deformable-detr-refine',
        {},
        'GQPosDeformableDETR',
        16,
    ),
    'deformable_detr_two_stage': (
        'deformable-detr-refine',
        dict(as_two_stage=True),
        'GQPosDeformableDETR',
        256,
    ),
}
NUM_QUERIES, NUM_LAYERS = 6, 3
# the detectors that run their layers through GQPosMixin.gqpos_layer
SPLIT_TARGETS = [t for t in TARGETS if t != 'conditional_detr']


# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


def _shrink(cfg, dims: int):
    """Every attention / FFN / head to ``dims`` wide, no dropout."""
    if isinstance(cfg, dict):
        if 'embed_dims' in cfg:
            cfg['embed_dims'] = dims
        if 'feedforward_channels' in cfg:
            cfg['feedforward_channels'] = 2 * dims
        if 'num_heads' in cfg:
            cfg['num_heads'] = 2
        for key in ('dropout', 'attn_drop', 'ffn_drop'):
            if key in cfg:
                cfg[key] = 0.0
        for value in cfg.values():
            _shrink(value, dims)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _shrink(value, dims)


def tiny_model_cfg(target: str, gqpos=None, stock: bool = False) -> dict:
    """The toy config of ``target`` with a 16-d (or 256-d) transformer, 1
    encoder / 3 decoder layers, 6 queries and an eighth-width ResNet-18."""
    name, extra, gqpos_type, dims = TARGETS[target]
    cfg = Config.fromfile(
        osp.join(CFG_DIR, f'{name}_r18-w32_{SCHEDULE}_toy-coco.py')
    )
    model = copy.deepcopy(cfg.model.to_dict())
    model.update(extra)
    _shrink(model, dims)
    model['num_queries'] = NUM_QUERIES
    model['encoder']['num_layers'] = 1
    model['decoder']['num_layers'] = NUM_LAYERS
    model['positional_encoding']['num_feats'] = dims // 2
    model['backbone']['base_channels'] = 8
    model['neck']['in_channels'] = [
        c // 4 for c in model['neck']['in_channels']
    ]
    model['neck']['out_channels'] = dims
    if model['neck'].get('norm_cfg'):
        model['neck']['norm_cfg']['num_groups'] = 4
    model['test_cfg']['max_per_img'] = NUM_QUERIES
    if not stock:
        model['type'] = gqpos_type
        model['gqpos'] = gqpos
    return model


def build(target: str, gqpos=None, stock: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.build(tiny_model_cfg(target, gqpos, stock))
    model.init_weights()
    # mmdet's SinePositionalEncoding returns float32 whatever the input
    model.positional_encoding.register_forward_hook(
        lambda m, args, out: out.double()
    )
    return model.double().eval()


def make_batch(seed: int = 1):
    """Two 64 x 64 inputs (the second padded from 48 x 64), two boxes
    each."""
    gen = torch.Generator().manual_seed(seed)
    imgs = torch.randn(2, 3, 64, 64, generator=gen, dtype=torch.float64)
    samples = []
    for shape in ((64, 64), (48, 64)):
        sample = DetDataSample(
            metainfo=dict(
                img_shape=shape,
                ori_shape=shape,
                pad_shape=(64, 64),
                batch_input_shape=(64, 64),
                scale_factor=(1.0, 1.0),
            )
        )
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(
                [[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 44.0]],
                dtype=torch.float64,
            ),
            labels=torch.tensor([0, 2]),
        )
        samples.append(sample)
    return imgs, samples


def run(model, imgs, samples):
    """Decoder outputs and the head's (cls, boxes) ``[L, bs, nq, *]``."""
    out = model.forward_transformer(model.extract_feat(imgs), samples)
    return out, model.bbox_head(**out)


def stock_position(model, bs: int) -> torch.Tensor:
    """query_pos[0] as the stock pre_decoder makes it (no two-stage)."""
    weight = model.query_embedding.weight
    pos = weight[:, : model.embed_dims]
    return pos.unsqueeze(0).expand(bs, -1, -1)


def box_branch_weight(model, layer_id: int) -> torch.Tensor:
    head = model.bbox_head
    if hasattr(head, 'reg_branches'):
        return head.reg_branches[layer_id][-1].weight
    return head.fc_reg.weight


@pytest.mark.parametrize('target', list(TARGETS))
def test_off_is_stock(target):
    stock = build(target, stock=True, seed=0)
    off = build(target, gqpos=None, seed=1)
    assert off.gqpos is None and not off.with_gqpos
    off.load_state_dict(stock.state_dict(), strict=True)
    assert off.state_dict().keys() == stock.state_dict().keys()
    imgs, samples = make_batch()
    with torch.no_grad():
        _, (cls_a, box_a) = run(stock, imgs, samples)
        _, (cls_b, box_b) = run(off, imgs, samples)
    assert torch.equal(cls_a, cls_b) and torch.equal(box_a, box_b)


@pytest.mark.parametrize('target', list(TARGETS))
def test_stock_weights_load_with_only_gqpos_missing(target):
    stock = build(target, stock=True)
    model = build(target, gqpos=dict(), seed=1)
    result = model.load_state_dict(stock.state_dict(), strict=False)
    new_keys = {k for k in model.state_dict() if k.startswith('gqpos.')}
    assert new_keys  # e.g. gqpos.mlps.0.layers.0.weight
    assert set(result.missing_keys) == new_keys
    assert result.unexpected_keys == []
    assert all(
        torch.equal(v, model.state_dict()[k])
        for k, v in stock.state_dict().items()
    )


@pytest.mark.parametrize(
    'target, attn',
    [(t, None) for t in TARGETS] + [(t, 'self') for t in SPLIT_TARGETS],
)
def test_zero_init_add_equals_stock(target, attn):
    """The decoder loop GQPos runs is the stock one: with the guided
    offset at zero the outputs are the stock detector's. With
    ``attn='self'`` (the layer's attentions run one by one, two positions)
    this shows the written-out layer is the layer's own forward."""
    stock = build(target, stock=True)
    gqpos = dict(zero_init=True, detach=False, attn=attn)
    model = build(target, gqpos=gqpos, seed=1)
    model.load_state_dict(stock.state_dict(), strict=False)
    imgs, samples = make_batch()
    with torch.no_grad():
        out_a, (cls_a, box_a) = run(stock, imgs, samples)
        out_b, (cls_b, box_b) = run(model, imgs, samples)
    torch.testing.assert_close(out_b['hidden_states'], out_a['hidden_states'])
    torch.testing.assert_close(cls_b, cls_a)
    torch.testing.assert_close(box_b, box_a)


def _record_positions(model):
    """query_pos each decoder layer receives, and what the probe saw."""
    received, probed = {}, {}
    for layer_id, layer in enumerate(model.decoder.layers):
        layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=layer_id: received.__setitem__(
                i, kwargs['query_pos']
            ),
            with_kwargs=True,
        )
    model.gqpos.probe.register_forward_hook(
        lambda m, args, out: probed.__setitem__(args[1], out)
    )
    return received, probed


@pytest.mark.parametrize('shared_mlp', [False, True])
@pytest.mark.parametrize('mode', ['add', 'replace'])
@pytest.mark.parametrize('target', list(TARGETS))
def test_query_pos_follows_previous_boxes(target, mode, shared_mlp):
    gqpos = dict(mode=mode, shared_mlp=shared_mlp, num_feats=6)
    model = build(target, gqpos=gqpos)
    received, probed = _record_positions(model)
    imgs, samples = make_batch()
    with torch.no_grad():
        out, (_, boxes) = run(model, imgs, samples)
    assert sorted(received) == sorted(probed) == list(range(NUM_LAYERS))
    for layer_id in range(NUM_LAYERS):
        assert received[layer_id] is probed[layer_id]
    bs = imgs.shape[0]
    two_stage = target.endswith('two_stage')
    stock = received[0]
    if not two_stage:
        torch.testing.assert_close(stock, stock_position(model, bs))
    for layer_id in range(NUM_LAYERS - 1):
        mlp = model.gqpos.mlps[0 if shared_mlp else layer_id]
        enc = coordinate_to_encoding(boxes[layer_id], num_feats=6)
        expected = mlp(enc) + (stock if mode == 'add' else 0)
        torch.testing.assert_close(received[layer_id + 1], expected)
        assert not torch.allclose(received[layer_id + 1], stock)

    # GQPos leaves the references as the stock detector makes them
    refs = out.get('references')
    if target == 'conditional_detr':
        expected = model.decoder.ref_point_head(stock).sigmoid()
        torch.testing.assert_close(refs, expected)
    elif target == 'deformable_detr':
        for ref in refs[1:]:
            assert torch.equal(ref, refs[0])
    elif target.startswith('deformable_detr_'):
        for layer_id in range(NUM_LAYERS):
            torch.testing.assert_close(refs[layer_id + 1], boxes[layer_id])


@pytest.mark.parametrize('detach', [True, False])
@pytest.mark.parametrize('target', list(TARGETS))
def test_detach_cuts_position_gradient(target, detach):
    """Layer 1's output depends on layer 0's box branch only through the
    guided position (refined references are detached by the stock code)."""
    model = build(target, gqpos=dict(detach=detach))
    imgs, samples = make_batch()
    out = model.forward_transformer(model.extract_feat(imgs), samples)
    weight = box_branch_weight(model, 0)
    mlp_weight = model.gqpos.mlps[0].layers[0].weight
    grad_box, grad_mlp = torch.autograd.grad(
        out['hidden_states'][1].pow(2).sum(),
        [weight, mlp_weight],
        allow_unused=True,
    )
    assert grad_mlp is not None and grad_mlp.abs().sum() > 0
    if detach:
        assert grad_box is None or not grad_box.any()
    else:
        assert grad_box is not None and grad_box.abs().sum() > 0


@pytest.mark.parametrize(
    'target', ['detr', 'conditional_detr', 'deformable_detr_refine']
)
def test_loss_trains_every_mlp(target):
    model = build(target, gqpos=dict()).train()
    imgs, samples = make_batch()
    losses = model.loss(imgs, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert len(model.gqpos.mlps) == NUM_LAYERS - 1
    for mlp in model.gqpos.mlps:
        assert mlp.layers[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        results = model.eval().predict(imgs, samples, rescale=True)
    assert len(results[0].pred_instances) == NUM_QUERIES


def test_errors_name_the_detector_key():
    with pytest.raises(KeyError, match='share_mlp'):
        MODELS.build(tiny_model_cfg('detr', gqpos=dict(share_mlp=True)))
    cfg = tiny_model_cfg('deformable_detr', gqpos=dict())
    cfg['decoder']['num_layers'] = 1
    with pytest.raises(ValueError, match='at least 2 layers'):
        MODELS.build(cfg)
    # Conditional DETR's cross-attention takes the position in layer 0 only
    with pytest.raises(ValueError, match=r"gqpos.attn in \('self',\)"):
        MODELS.build(
            tiny_model_cfg('conditional_detr', gqpos=dict(attn='both'))
        )
    with pytest.raises(ValueError, match='gqpos.attn must be one of'):
        MODELS.build(tiny_model_cfg('detr', gqpos=dict(attn='cross')))


def test_attn_defaults():
    assert build('detr', gqpos=dict()).gqpos.attn == 'both'
    assert build('deformable_detr', gqpos=dict()).gqpos.attn == 'both'
    assert build('conditional_detr', gqpos=dict()).gqpos.attn == 'self'


@pytest.mark.parametrize('attn', ['both', 'self'])
@pytest.mark.parametrize('target', SPLIT_TARGETS)
def test_attn_picks_the_attentions_with_the_guided_position(target, attn):
    """``attn='both'``: both attentions of every layer get the guided
    position; ``'self'``: the self-attention does, the cross-attention
    keeps query_pos[0] in every layer."""
    model = build(target, gqpos=dict(attn=attn))
    seen = {'self_attn': {}, 'cross_attn': {}}
    for layer_id, layer in enumerate(model.decoder.layers):
        for name, record in seen.items():
            getattr(layer, name).register_forward_pre_hook(
                lambda m, args, kwargs, i=layer_id, rec=record: (
                    rec.__setitem__(i, kwargs['query_pos'])
                ),
                with_kwargs=True,
            )
    probed = {}
    model.gqpos.probe.register_forward_hook(
        lambda m, args, out: probed.__setitem__(args[1], out)
    )
    imgs, samples = make_batch()
    with torch.no_grad():
        run(model, imgs, samples)
    stock = probed[0]
    for layer_id in range(NUM_LAYERS):
        guided = probed[layer_id]
        assert torch.equal(seen['self_attn'][layer_id], guided)
        cross = guided if attn == 'both' else stock
        assert torch.equal(seen['cross_attn'][layer_id], cross)
    assert not torch.allclose(probed[1], stock)
