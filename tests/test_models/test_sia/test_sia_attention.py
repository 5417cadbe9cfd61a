# Copyright (c) mmvfm contributors. All rights reserved.
"""SiAMultiScaleAttention: fusion off is the same module with w = 0,
parameterisation and init of w, masks, shapes, errors."""

import pytest
import torch

from mmvfm.models.sia import SiAMultiScaleAttention
from mmvfm.ops import similar_attention_pytorch

# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


SHAPES = [(2, 3), (4, 6), (8, 12)]
N = sum(h * w for h, w in SHAPES)


def _inputs(B=2, Nq=5, C=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, Nq, C, generator=g, dtype=torch.float64)
    memory = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    query_pos = torch.randn(B, Nq, C, generator=g, dtype=torch.float64)
    key_pos = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    # the second image: 5 of 12 columns / 7 of 8 rows valid at the finest
    masks = []
    for h, w in SHAPES:
        m = torch.zeros(B, h, w, dtype=torch.bool)
        s = 8 // h
        m[1, -(-7 // s) :, :] = True
        m[1, :, -(-(12 - 7) // s) :] = True
        masks.append(m.flatten(1))
    return query, memory, query_pos, key_pos, torch.cat(masks, 1)


def _module(fusion, **kwargs):
    torch.manual_seed(0)
    m = SiAMultiScaleAttention(16, 4, 3, fusion=fusion, **kwargs)
    m.init_weights()
    return m.double()


@pytest.mark.parametrize('fusion', ['prob', 'logit'])
def test_fusion_off_is_zero_weight(fusion):
    plain, fused = _module(None), _module(fusion)
    fused.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        # prob: w = sigmoid(-inf) = 0; logit: w = theta = 0
        fused.fusion_theta.fill_(-torch.inf if fusion == 'prob' else 0.0)
    q, mem, qp, kp, mask = _inputs()
    kwargs = dict(
        key=mem,
        query_pos=qp,
        key_pos=kp,
        key_padding_mask=mask,
        spatial_shapes=SHAPES,
    )
    expected = plain(q, **kwargs)
    torch.testing.assert_close(fused(q, **kwargs), expected)
    with torch.no_grad():
        fused.fusion_theta.fill_(0.3)
    assert not torch.allclose(fused(q, **kwargs), expected)


def test_forward_matches_the_op_by_hand():
    m = _module('prob', fusion_init=0.3)
    q, mem, qp, kp, mask = _inputs()
    out, maps = m(
        q,
        key=mem,
        value=mem * 2,
        query_pos=qp,
        key_pos=kp,
        key_padding_mask=mask,
        spatial_shapes=torch.tensor(SHAPES),
        return_attn=True,
    )
    B, Nq, C = q.shape
    qh = m.q_proj(q + qp).view(B, Nq, 4, 4)
    k = m.k_proj(mem + kp)
    v = m.v_proj(mem * 2)
    keys, values, masks, start = [], [], [], 0
    for h, w in SHAPES:
        sl = slice(start, start + h * w)
        keys.append(k[:, sl].view(B, h, w, 4, 4).permute(0, 3, 1, 2, 4))
        values.append(v[:, sl].view(B, h, w, 4, 4).permute(0, 3, 1, 2, 4))
        masks.append(mask[:, sl].view(B, h, w))
        start += h * w
    w = torch.full((2, 4), 0.3, dtype=torch.float64)
    ref, ref_maps = similar_attention_pytorch(
        qh, keys, values, w, 'prob', masks, return_attn=True
    )
    expected = q + m.out_proj(ref.reshape(B, Nq, C))
    torch.testing.assert_close(out, expected)
    for a, b, (h, w) in zip(maps, ref_maps, SHAPES):
        assert a.shape == (B, 4, Nq, h, w)
        torch.testing.assert_close(a, b)


def test_fusion_weight_init_and_reset():
    prob, logit = _module('prob'), _module('logit')
    assert prob.fusion_theta.shape == (2, 4)
    torch.testing.assert_close(
        prob.fusion_weights(), torch.full((2, 4), 0.5, dtype=torch.float64)
    )
    torch.testing.assert_close(
        logit.fusion_weights(), torch.ones(2, 4, dtype=torch.float64)
    )
    # a generic init of 2-D parameters (DETR's xavier) is undone
    torch.nn.init.xavier_uniform_(prob.fusion_theta)
    prob.reset_fusion()
    assert (prob.fusion_weights() == 0.5).all()
    fixed = _module('prob', fusion_init=0.2, fusion_learnable=False)
    assert 'fusion_theta' not in dict(fixed.named_parameters())
    assert 'fusion_theta' in dict(fixed.named_buffers())
    torch.testing.assert_close(
        fixed.fusion_weights(), torch.full((2, 4), 0.2, dtype=torch.float64)
    )
    assert _module(None).fusion_weights() is None


@pytest.mark.parametrize('fusion', ['prob', 'logit'])
def test_gradient_reaches_fusion_theta(fusion):
    m = _module(fusion)
    q, mem, qp, kp, mask = _inputs()
    out = m(
        q, key=mem, key_pos=kp, key_padding_mask=mask, spatial_shapes=SHAPES
    )
    out.square().sum().backward()
    assert m.fusion_theta.grad is not None
    assert (m.fusion_theta.grad != 0).all()


def test_errors():
    with pytest.raises(ValueError, match='fusion must be one of'):
        SiAMultiScaleAttention(16, 4, 3, fusion='sum')
    with pytest.raises(ValueError, match='divisible'):
        SiAMultiScaleAttention(18, 4, 3)
    with pytest.raises(ValueError, match=r'fusion_init in \(0, 1\)'):
        SiAMultiScaleAttention(16, 4, 3, fusion_init=1.0)
    with pytest.raises(ValueError, match='batch first'):
        SiAMultiScaleAttention(16, 4, 3, batch_first=False)
    m = _module('prob')
    q, mem, *_ = _inputs()
    with pytest.raises(ValueError, match='attn_mask'):
        m(q, key=mem, spatial_shapes=SHAPES, attn_mask=torch.ones(5, N))
    with pytest.raises(ValueError, match='expected 3 levels'):
        m(q, key=mem, spatial_shapes=SHAPES[:2])
    with pytest.raises(ValueError, match='spatial_shapes'):
        m(q, key=mem[:, :-1], spatial_shapes=SHAPES)
    with pytest.raises(ValueError, match='level 2: expected 8x12'):
        m(q, key=mem[:, : 6 + 24 + 84], spatial_shapes=SHAPES[:2] + [(7, 12)])


def test_spatial_query_starts_local_at_the_reference():
    """spatial_query=True, content projections zeroed: the logits are the
    spatial term alone, s . key_pos with lambda = 1 at init, and every head
    pair (y-frequency heads and x-frequency heads) peaks at the cell that
    holds the reference point (one level of 8 x 12 cells)."""
    from mmdet.models.layers import SinePositionalEncoding
    from mmdet.models.layers.transformer import coordinate_to_encoding

    C, H = 64, 2  # head 0 holds the y frequencies, head 1 the x ones
    m = SiAMultiScaleAttention(C, H, 1, fusion=None, spatial_query=True)
    m.init_weights()
    m = m.double()
    torch.testing.assert_close(
        m.spatial_proj.bias, torch.ones(C, dtype=torch.float64)
    )
    for proj in (m.q_proj, m.k_proj):
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    h, w = 8, 12
    pos = SinePositionalEncoding(C // 2, normalize=True, offset=-0.5)(
        None, input=torch.zeros(1, C, h, w)
    ).double()
    key_pos = pos.flatten(2).transpose(1, 2)  # [1, h*w, C]
    row, col = 5, 2  # reference at this cell's centre
    ref = torch.tensor([[[(col + 0.5) / w, (row + 0.5) / h]]]).double()
    sine = coordinate_to_encoding(ref, num_feats=C // 2)
    memory = torch.randn(1, h * w, C, dtype=torch.float64)
    query = torch.randn(1, 1, C, dtype=torch.float64)
    _, maps = m(
        query,
        memory,
        key_pos=key_pos,
        spatial_shapes=[(h, w)],
        query_sine_pos=sine,
        return_attn=True,
    )
    attn = maps[0][0, :, 0]  # [H, h, w]
    # head 0 (y): peaks on row 5, constant along x; head 1 (x): column 2
    assert attn[0].sum(1).argmax() == row
    assert attn[1].sum(0).argmax() == col
    with pytest.raises(ValueError, match='needs query_sine_pos'):
        m(query, memory, key_pos=key_pos, spatial_shapes=[(h, w)])
