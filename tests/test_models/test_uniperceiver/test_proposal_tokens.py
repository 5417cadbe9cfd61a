# Copyright (c) mmvfm contributors. All rights reserved.
"""Proposal tokens q_sem + B(box) + M(mask): each term by its equation."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmvfm.models.uniperceiver import ProposalTokens, box_sine_encoding


def test_box_encoding_by_hand():
    box = torch.tensor([[0.25, 0.5, 0.1, 1.0]], dtype=torch.float64)
    enc = box_sine_encoding(box, num_feats=4, temperature=100.0)
    assert enc.shape == (1, 16)
    expected = []
    for v in box[0].tolist():
        for i in range(2):
            freq = 100.0 ** (2 * i / 4)
            a = v * 2 * math.pi / freq
            expected += [math.sin(a), math.cos(a)]
    assert torch.allclose(enc[0], torch.tensor(expected, dtype=enc.dtype))
    with pytest.raises(ValueError, match='even'):
        box_sine_encoding(box, 3)


def test_tokens_are_the_sum_of_the_three_terms():
    torch.manual_seed(0)
    tok = ProposalTokens(8, num_feats=4, pool_size=7).double()
    sem = torch.randn(2, 3, 8, dtype=torch.float64)
    boxes = torch.rand(2, 3, 4, dtype=torch.float64)
    masks = torch.randn(2, 3, 14, 21, dtype=torch.float64)
    out = tok(sem, boxes, masks)
    box_term = tok.box_embed(box_sine_encoding(boxes, 4))
    pooled = F.interpolate(
        masks.sigmoid().flatten(0, 1)[:, None], (7, 7), mode='bilinear'
    ).flatten(1)
    mask_term = tok.mask_embed(pooled).view(2, 3, 8)
    assert torch.allclose(out, sem + box_term + mask_term)
    # a box term depends on the box only, a mask term on the mask only
    other = tok(sem, boxes, masks.flip(-1))
    assert not torch.allclose(out, other)
    same_box = tok(torch.zeros_like(sem), boxes, masks) - mask_term
    assert torch.allclose(same_box, box_term)


def test_mask_term_is_resolution_free():
    """A mask and its 2x nearest upsampling pool to about the same 28x28
    map: the token does not depend on the proposal stage's resolution."""
    torch.manual_seed(0)
    tok = ProposalTokens(8).double()
    mask = torch.zeros(1, 1, 56, 56, dtype=torch.float64)
    mask[..., 10:30, 20:50] = 8.0
    mask[..., :10, :] = -8.0
    big = F.interpolate(mask, scale_factor=2, mode='nearest')
    sem = torch.zeros(1, 1, 8, dtype=torch.float64)
    box = torch.full((1, 1, 4), 0.5, dtype=torch.float64)
    assert torch.allclose(tok(sem, box, mask), tok(sem, box, big), atol=0.05)


def test_bad_shapes_are_named():
    tok = ProposalTokens(8, num_feats=4)
    sem = torch.zeros(2, 3, 8)
    with pytest.raises(ValueError, match=r'boxes must be \(N, Q, 4\)'):
        tok(sem, torch.zeros(2, 3, 2), torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match='masks must be'):
        tok(sem, torch.zeros(2, 3, 4), torch.zeros(2, 2, 5, 5))
