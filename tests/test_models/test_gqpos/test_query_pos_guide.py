# Copyright (c) mmvfm contributors. All rights reserved.
"""QueryPosGuide: options, config checks, the guided position itself."""

import pytest
import torch
from mmdet.models.layers.transformer import coordinate_to_encoding

from mmvfm.models.gqpos import (
    GQPOS_DEFAULTS,
    QueryPosGuide,
    build_query_pos_guide,
    parse_gqpos_cfg,
)


def _boxes(bs=2, nq=5, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(bs, nq, 4, generator=gen, dtype=torch.float64)


def test_none_is_off():
    assert parse_gqpos_cfg(None) is None
    assert build_query_pos_guide(None, 16, 3) is None


def test_defaults_filled():
    cfg = parse_gqpos_cfg(dict())
    assert cfg == GQPOS_DEFAULTS
    assert cfg['detach'] is True and cfg['mode'] == 'add'
    guide = build_query_pos_guide(dict(), 16, 4)
    assert guide.num_feats == 8
    assert len(guide.mlps) == 3
    # 4 * num_feats -> embed_dims -> embed_dims
    assert guide.mlps[0].layers[0].in_features == 32
    assert guide.mlps[0].layers[-1].out_features == 16


@pytest.mark.parametrize(
    'gqpos, error, words',
    [
        (dict(detach_box=True), KeyError, 'detach_box'),
        (dict(type='GQPos'), KeyError, 'type'),
        (dict(detach=1), TypeError, 'gqpos.detach'),
        (dict(shared_mlp='yes'), TypeError, 'gqpos.shared_mlp'),
        (dict(mode='concat'), ValueError, 'gqpos.mode'),
        (dict(num_feats=0), ValueError, 'gqpos.num_feats'),
        (dict(num_feats=8.0), ValueError, 'gqpos.num_feats'),
        (dict(temperature=-1), ValueError, 'gqpos.temperature'),
        (dict(mlp_layers=0), ValueError, 'gqpos.mlp_layers'),
        (dict(zero_init=True, mode='replace'), ValueError, 'zero_init'),
        ([('detach', True)], TypeError, 'gqpos must be a dict'),
    ],
)
def test_bad_cfg_names_the_key(gqpos, error, words):
    with pytest.raises(error, match=words):
        parse_gqpos_cfg(gqpos)


def test_one_layer_decoder_rejected():
    with pytest.raises(ValueError, match='at least 2 layers'):
        build_query_pos_guide(dict(), 16, 1)


@pytest.mark.parametrize('shared', [False, True])
@pytest.mark.parametrize('mode', ['add', 'replace'])
def test_position_is_mlp_of_sine(shared, mode):
    torch.manual_seed(0)
    guide = QueryPosGuide(
        16, 3, shared_mlp=shared, mode=mode, num_feats=6, temperature=20
    ).double()
    guide.init_weights()
    assert len(guide.mlps) == (1 if shared else 2)
    box = _boxes()
    stock = torch.randn(2, 5, 16, dtype=torch.float64)
    for layer_id in (0, 1):
        enc = coordinate_to_encoding(box, num_feats=6, temperature=20)
        assert enc.shape == (2, 5, 24)
        mlp = guide.mlps[0 if shared else layer_id]
        h = torch.relu(enc @ mlp.layers[0].weight.T + mlp.layers[0].bias)
        expected = h @ mlp.layers[1].weight.T + mlp.layers[1].bias
        if mode == 'add':
            expected = expected + stock
        torch.testing.assert_close(guide(box, layer_id, stock), expected)
    if not shared:
        assert not torch.allclose(guide(box, 0, stock), guide(box, 1, stock))
    with pytest.raises(IndexError):
        guide(box, 2, stock)  # the last layer has no next layer


@pytest.mark.parametrize('detach', [True, False])
def test_detach_stops_box_gradient(detach):
    guide = QueryPosGuide(16, 2, detach=detach).double()
    box = _boxes().requires_grad_()
    guide(box, 0, torch.zeros(2, 5, 16, dtype=torch.float64)).sum().backward()
    assert guide.mlps[0].layers[0].weight.grad.abs().sum() > 0
    if detach:
        assert box.grad is None
    else:
        assert box.grad.abs().sum() > 0


def test_zero_init_starts_at_stock_position():
    guide = QueryPosGuide(16, 3, zero_init=True).double()
    stock = torch.randn(2, 5, 16, dtype=torch.float64)
    assert torch.equal(guide(_boxes(), 1, stock), stock)
    guide.init_weights()  # re-zeroed after the Xavier init
    assert torch.equal(guide(_boxes(), 0, stock), stock)
    # the last layer learns first; nothing reaches the layers below it yet
    guide(_boxes(), 0, stock).pow(2).sum().backward()
    assert guide.mlps[0].layers[-1].weight.grad.abs().sum() > 0
    assert guide.mlps[0].layers[0].weight.grad.abs().sum() == 0


def test_init_weights_xavier_zero_bias():
    guide = QueryPosGuide(16, 3)
    guide.init_weights()
    for mlp in guide.mlps:
        for layer in mlp.layers:
            assert torch.all(layer.bias == 0)
            fan_in, fan_out = layer.weight.shape[1], layer.weight.shape[0]
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.5 * bound


def test_probe_is_identity_with_hook():
    guide = QueryPosGuide(16, 2)
    seen = []
    guide.probe.register_forward_hook(
        lambda m, args, out: seen.append((args[1], out))
    )
    pos = torch.randn(2, 5, 16)
    assert guide.probe(pos, 1) is pos
    assert seen[0][0] == 1 and seen[0][1] is pos
    assert not list(guide.probe.parameters())
