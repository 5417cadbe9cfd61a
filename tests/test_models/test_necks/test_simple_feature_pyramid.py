# Copyright (c) mmvfm contributors. All rights reserved.
"""SimpleFeaturePyramid: ViTDet's scales from one map, extra levels,
channel LayerNorm against its equation, errors naming the field."""

import pytest
import torch
from mmdet.registry import MODELS

from mmvfm.models.necks import LayerNorm2d, SimpleFeaturePyramid

pytestmark = pytest.mark.usefixtures('one_thread')


def test_scales_and_extra_levels():
    neck = MODELS.build(
        dict(
            type='SimpleFeaturePyramid',
            in_channels=32,
            out_channels=16,
            num_extra_levels=1,
        )
    )
    x = torch.randn(2, 32, 8, 6)
    outs = neck((torch.randn(2, 32, 4, 3), x))  # the last map is used
    assert [tuple(o.shape) for o in outs] == [
        (2, 16, 32, 24),
        (2, 16, 16, 12),
        (2, 16, 8, 6),
        (2, 16, 4, 3),
        (2, 16, 2, 2),
    ]
    assert neck.strides == [0.25, 0.5, 1.0, 2.0, 4.0]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_layer_norm_2d_equation():
    norm = LayerNorm2d(4).double()
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps)
    expected = expected * norm.weight.view(1, 4, 1, 1) + norm.bias.view(
        1, 4, 1, 1
    )
    torch.testing.assert_close(norm(x), expected)


def test_errors():
    with pytest.raises(ValueError, match='each must be one of'):
        SimpleFeaturePyramid(32, 16, scale_factors=(3.0,))
    with pytest.raises(ValueError, match='fine to coarse'):
        SimpleFeaturePyramid(32, 16, scale_factors=(1.0, 2.0))
    neck = SimpleFeaturePyramid(32, 16, scale_factors=(1.0,))
    with pytest.raises(ValueError, match=r"out_type='featmap'"):
        neck((torch.randn(2, 17, 32),))  # a token sequence, not a map
    with pytest.raises(ValueError, match=r'\(B, 32, h, w\)'):
        neck((torch.randn(2, 64, 4, 4),))
