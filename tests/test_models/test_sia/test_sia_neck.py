# Copyright (c) mmvfm contributors. All rights reserved.
"""SiAFusionNeck: exact 2x levels coarse to fine, equal to mmdet's FPN
where the FPN is exact, gates start as the FPN sum, strict alignment."""

import pytest
import torch
from mmdet.models.backbones import ResNet
from mmdet.models.necks import FPN

from mmvfm.models.sia import SiAFusionNeck

# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


IN_CHANNELS = [8, 16, 32]


def _feats(sizes, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, c, h, w, generator=g)
        for c, (h, w) in zip(IN_CHANNELS, sizes)
    ]


def _neck(**kwargs):
    torch.manual_seed(0)
    neck = SiAFusionNeck(IN_CHANNELS, 12, **kwargs)
    neck.init_weights()
    return neck


def test_equals_fpn_reversed_on_exact_sizes():
    neck = _neck()
    fpn = FPN(IN_CHANNELS, 12, num_outs=3)
    # ours is built coarse to fine, the FPN fine to coarse
    state = {}
    for i in range(3):
        j = 2 - i
        for p in ('weight', 'bias'):
            state[f'lateral_convs.{j}.conv.{p}'] = neck.state_dict()[
                f'lateral_convs.{i}.conv.{p}'
            ]
            state[f'fpn_convs.{j}.conv.{p}'] = neck.state_dict()[
                f'out_convs.{i}.conv.{p}'
            ]
    fpn.load_state_dict(state)
    feats = _feats([(16, 12), (8, 6), (4, 3)])
    outs = neck(feats)
    assert [tuple(o.shape[-2:]) for o in outs] == [(4, 3), (8, 6), (16, 12)]
    for a, b in zip(outs, fpn(feats)[::-1]):
        torch.testing.assert_close(a, b)


def test_exact_2x_from_a_backbone_with_odd_sizes():
    backbone = ResNet(18, base_channels=8, out_indices=(0, 1, 2))
    feats = backbone(torch.randn(1, 3, 100, 76))
    # ceil rounding at strides 4, 8, 16: not 2x of each other
    assert [tuple(f.shape[-2:]) for f in feats] == [(25, 19), (13, 10), (7, 5)]
    neck = _neck()
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [
        (1, 12, 7, 5),
        (1, 12, 14, 10),
        (1, 12, 28, 20),
    ]
    with pytest.raises(
        ValueError, match='level 1 .* is 13x10, expected .*14x10'
    ):
        _neck(align='strict')(feats)


def test_crops_finer_levels_larger_than_2x():
    outs = _neck()(_feats([(30, 21), (15, 10), (7, 5)]))
    assert [tuple(o.shape[-2:]) for o in outs] == [(7, 5), (14, 10), (28, 20)]


@pytest.mark.parametrize('gate', ['channel', 'spatial'])
def test_gates_start_as_the_fpn_sum_and_learn(gate):
    plain, gated = _neck(), _neck(gate=gate)
    gated.load_state_dict(plain.state_dict(), strict=False)
    feats = _feats([(16, 12), (8, 6), (4, 3)])
    for a, b in zip(gated(feats), plain(feats)):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in gated(feats)).backward()
    params = [p for n, p in gated.named_parameters() if 'gate' in n]
    assert params and all(p.grad.abs().sum() > 0 for p in params)


def test_errors():
    with pytest.raises(ValueError, match='gate must be one of'):
        SiAFusionNeck(IN_CHANNELS, 12, gate='attention')
    with pytest.raises(ValueError, match='align must be one of'):
        SiAFusionNeck(IN_CHANNELS, 12, align='crop')
    with pytest.raises(ValueError, match='expects 3 inputs'):
        _neck()(_feats([(16, 12), (8, 6)]))
