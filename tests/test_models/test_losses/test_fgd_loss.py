# Copyright (c) mmvfm contributors. All rights reserved.
"""FGDLoss: hand-written masks and terms, the reference computation as the
oracle, gradients, half precision, errors, checkpoint keys, registry."""

import math
from typing import Dict, List

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures.bbox import HorizontalBoxes

import mmvfm.models.losses.fgd_loss as fgd_module
from mmvfm.models.losses import FGDLoss
from mmvfm.testing import FGDLossReference

TERMS = ('fg', 'bg', 'at', 'rela')


# tiny tensors: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures('one_thread')


def metas(*shapes) -> List[dict]:
    """One meta per (img_shape, batch_input_shape) pair."""
    return [dict(img_shape=i, batch_input_shape=b) for i, b in shapes]


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# --------------------------------------------------------------------------
# masks, written out by hand
# --------------------------------------------------------------------------
def test_mask_box_on_border_uses_unclipped_area():
    # 16 x 16 input on a 4 x 4 map: a factor 1/4.
    # box (8, 4, 16, 10) -> x 2..ceil(4)=4, y 1..ceil(2.5)=3: rows 1-3,
    # columns 2-3 (4 is past the edge); the area counts 3 rows x 3 columns.
    loss = FGDLoss(4, 4)
    fg, bg = loss.get_masks(
        [boxes([8, 4, 16, 10])], metas(((16, 16), (16, 16))), (4, 4)
    )
    a = 1 / 9
    expected_fg = torch.tensor(
        [
            [0, 0, 0, 0],
            [0, 0, a, a],
            [0, 0, a, a],
            [0, 0, a, a],
        ]
    )
    b = 1 / 10
    expected_bg = torch.tensor(
        [
            [b, b, b, b],
            [b, b, 0, 0],
            [b, b, 0, 0],
            [b, b, 0, 0],
        ]
    )
    torch.testing.assert_close(fg[0], expected_fg)
    torch.testing.assert_close(bg[0], expected_bg)


def test_mask_overlap_smallest_box_wins_and_image_without_boxes():
    # 20 x 20 input on a 5 x 5 map (factor 1/4). Big box rows/cols 0-3
    # (1/16), small box rows/cols 1-2 (1/4). Second image: no boxes.
    loss = FGDLoss(4, 4)
    big, small = [0, 0, 12, 12], [4, 4, 8, 8]
    m = metas(((20, 20), (20, 20)), ((20, 20), (20, 20)))
    B, S = 1 / 16, 1 / 4
    expected_fg = torch.tensor(
        [
            [B, B, B, B, 0],
            [B, S, S, B, 0],
            [B, S, S, B, 0],
            [B, B, B, B, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    z = 1 / 9
    expected_bg = torch.tensor(
        [
            [0, 0, 0, 0, z],
            [0, 0, 0, 0, z],
            [0, 0, 0, 0, z],
            [0, 0, 0, 0, z],
            [z, z, z, z, z],
        ]
    )
    for rows in ([small, big], [big, small]):
        fg, bg = loss.get_masks([boxes(*rows), boxes()], m, (5, 5))
        torch.testing.assert_close(fg[0], expected_fg)
        torch.testing.assert_close(bg[0], expected_bg)
        torch.testing.assert_close(fg[1], torch.zeros(5, 5))
        torch.testing.assert_close(bg[1], torch.full((5, 5), 1 / 25))


def test_mask_padding_row():
    # the border box of the first test plus an all-zero padding row
    m = metas(((16, 16), (16, 16)))
    gt = [boxes([8, 4, 16, 10], [0, 0, 0, 0])]
    a = 1 / 9
    fg, bg = FGDLoss(4, 4).get_masks(gt, m, (4, 4))
    assert fg[0, 0, 0] == 0
    assert bg[0, 0, 0] == pytest.approx(1 / 10)
    assert fg[0, 1, 2] == pytest.approx(a)

    # the reference makes the zero row a 1 x 1 box at (0, 0) of weight 1
    like = torch.zeros(1, 4, 4)
    ref = FGDLossReference(4, 4, box_scale='pad')
    fg_r, bg_r = ref.get_masks_reference(gt, m, like)
    expected_fg = torch.tensor(
        [
            [1, 0, 0, 0],
            [0, 0, a, a],
            [0, 0, a, a],
            [0, 0, a, a],
        ]
    )
    c = 1 / 9
    expected_bg = torch.tensor(
        [
            [0, c, c, c],
            [c, c, 0, 0],
            [c, c, 0, 0],
            [c, c, 0, 0],
        ]
    )
    torch.testing.assert_close(fg_r[0], expected_fg)
    torch.testing.assert_close(bg_r[0], expected_bg)
    ref.drop_zero_rows = True
    fg_d, bg_d = ref.get_masks_reference(gt, m, like)
    torch.testing.assert_close(fg_d, fg)
    torch.testing.assert_close(bg_d, bg)


def test_mask_box_scale_and_full_cover():
    # image 8 x 16 in a 16 x 16 batch, 4 x 4 map, box (0, 0, 4, 4)
    m = metas(((8, 16), (16, 16)))
    gt = [boxes([0, 0, 4, 4])]
    q, s = 1 / 4, 1 / 6
    # pad: x 0..1, y 0..ceil(1)=1
    fg, _ = FGDLoss(4, 4, box_scale='pad').get_masks(gt, m, (4, 4))
    expected = torch.tensor(
        [[q, q, 0, 0], [q, q, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    )
    torch.testing.assert_close(fg[0], expected)
    # img_shape (the reference): y by 4 / 8 -> 0..2
    fg, _ = FGDLoss(4, 4, box_scale='img_shape').get_masks(gt, m, (4, 4))
    expected = torch.tensor(
        [[s, s, 0, 0], [s, s, 0, 0], [s, s, 0, 0], [0, 0, 0, 0]]
    )
    torch.testing.assert_close(fg[0], expected)

    # a box over the whole image covers every pixel (5 x 5 area): the
    # background mask has no pixel and stays all zero
    m = metas(((16, 16), (16, 16)))
    fg, bg = FGDLoss(4, 4).get_masks([boxes([0, 0, 16, 16])], m, (4, 4))
    torch.testing.assert_close(fg[0], torch.full((4, 4), 1 / 25))
    torch.testing.assert_close(bg[0], torch.zeros(4, 4))

    # clipped to the image first: the same box drawn past the border
    fg2, _ = FGDLoss(4, 4).get_masks([boxes([-5, -3, 30, 17])], m, (4, 4))
    torch.testing.assert_close(fg2, fg)


def test_mask_accepts_horizontal_boxes():
    m = metas(((20, 20), (20, 20)))
    t = boxes([0, 0, 12, 12], [4, 4, 8, 8])
    loss = FGDLoss(4, 4)
    fg, bg = loss.get_masks([t], m, (5, 5))
    fg_h, bg_h = loss.get_masks([HorizontalBoxes(t)], m, (5, 5))
    torch.testing.assert_close(fg_h, fg)
    torch.testing.assert_close(bg_h, bg)


# --------------------------------------------------------------------------
# terms, computed by hand
# --------------------------------------------------------------------------
def test_terms_literal_values():
    # N=1, C=2, 2 x 2 map, 8 x 8 input: box (4, 4, 8, 8) -> columns/rows
    # 1..2, only pixel (1, 1) on the map, weight 1/4; M_bg = 1/3 elsewhere.
    # F_t = 1, F_s = -1: S = C = 1 on both sides (L_at = 0), diff = -2.
    # L_fg = 2 ch * 1/4 * 4 = 2, L_bg = 2 ch * 3 px * 1/3 * 4 = 8,
    # L_rela = 8 values * 4 = 32 (channel_add = 0 at init).
    loss = FGDLoss(
        2, 2, alpha_fgd=2, beta_fgd=3, gamma_fgd=5, lambda_fgd=7
    ).double()
    ft = torch.ones(1, 2, 2, 2, dtype=torch.float64)
    fs = -ft
    gt = [boxes([4, 4, 8, 8])]
    m = metas(((8, 8), (8, 8)))
    fg, bg = loss.get_masks(gt, m, (2, 2))
    torch.testing.assert_close(fg[0], torch.tensor([[0, 0], [0, 0.25]]))
    t = 1 / 3
    torch.testing.assert_close(bg[0], torch.tensor([[t, t], [t, 0]]))
    terms = loss(fs, ft, gt, m, return_terms=True)
    expected = dict(fg=2 * 2.0, bg=3 * 8.0, at=0.0, rela=7 * 32.0)
    for key in TERMS:
        assert terms[key].item() == pytest.approx(expected[key], abs=1e-12)
    assert loss(fs, ft, gt, m).item() == pytest.approx(252.0)

    # a constant student offset (1, 0) per channel: out_s - out_t is -1 on
    # channel 0 and -2 on channel 1: L_rela = 4 * 1 + 4 * 4 = 20
    with torch.no_grad():
        loss.channel_add_conv_s[3].bias.copy_(torch.tensor([1.0, 0.0]))
    rela = loss(fs, ft, gt, m, return_terms=True)['rela']
    assert rela.item() == pytest.approx(7 * 20.0)


def _softmax(values: List[float]) -> List[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _hand_terms(
    fs: List[List[float]],
    ft: List[List[float]],
    fg: List[float],
    bg: List[float],
    p: Dict[str, list],
    temp: float,
) -> Dict[str, float]:
    """The unweighted FGD terms of one image from the equations, in plain
    Python. Maps as [channel][pixel]; p holds the GcBlock parameters."""
    C, L = len(ft), len(ft[0])

    def spatial(x):
        means = [sum(abs(x[c][i]) for c in range(C)) / C for i in range(L)]
        return [L * v for v in _softmax([m / temp for m in means])]

    def channel(x):
        means = [sum(abs(v) for v in x[c]) / L for c in range(C)]
        return [C * v for v in _softmax([m / temp for m in means])]

    S_t, C_t, S_s, C_s = spatial(ft), channel(ft), spatial(fs), channel(fs)
    d = [[fs[c][i] - ft[c][i] for i in range(L)] for c in range(C)]
    fg_loss = sum(
        S_t[i] * C_t[c] * fg[i] * d[c][i] ** 2
        for c in range(C)
        for i in range(L)
    )
    bg_loss = sum(
        S_t[i] * C_t[c] * bg[i] * d[c][i] ** 2
        for c in range(C)
        for i in range(L)
    )
    at = sum(abs(C_s[c] - C_t[c]) for c in range(C)) + sum(
        abs(S_s[i] - S_t[i]) for i in range(L)
    )

    def gc_out(x, side):
        wm, bm = p[f'mask_w_{side}'], p[f'mask_b_{side}']
        prob = _softmax(
            [sum(wm[c] * x[c][i] for c in range(C)) + bm for i in range(L)]
        )
        ctx = [sum(x[c][i] * prob[i] for i in range(L)) for c in range(C)]
        w1, b1 = p[f'w1_{side}'], p[f'b1_{side}']
        h = [
            sum(w1[j][c] * ctx[c] for c in range(C)) + b1[j]
            for j in range(C // 2)
        ]
        mu = sum(h) / len(h)
        var = sum((v - mu) ** 2 for v in h) / len(h)
        g, beta = p[f'ln_w_{side}'], p[f'ln_b_{side}']
        h = [
            max(0.0, (v - mu) / math.sqrt(var + 1e-5) * g[j] + beta[j])
            for j, v in enumerate(h)
        ]
        w2, b2 = p[f'w2_{side}'], p[f'b2_{side}']
        add = [
            sum(w2[c][j] * h[j] for j in range(C // 2)) + b2[c]
            for c in range(C)
        ]
        return [[x[c][i] + add[c] for i in range(L)] for c in range(C)]

    out_s, out_t = gc_out(fs, 's'), gc_out(ft, 't')
    rela = sum(
        (out_s[c][i] - out_t[c][i]) ** 2 for c in range(C) for i in range(L)
    )
    return dict(fg=fg_loss, bg=bg_loss, at=at, rela=rela)


def test_terms_match_hand_computation():
    # N=1, C=4, 2 x 2 map; the mask of the literal test (pixel (1, 1)).
    ft = [[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0],
          [2.5, -0.5, 1.0, -1.5], [-3.0, 0.25, 2.0, 1.0]]  # fmt: skip
    fs = [[0.5, -1.0, 1.5, 2.0], [1.0, 1.0, -2.0, 0.5],
          [2.0, 0.5, -1.0, -1.0], [-2.5, 1.25, 1.0, 0.0]]  # fmt: skip
    p = dict(
        mask_w_s=[0.3, -0.2, 0.5, 0.1], mask_b_s=0.2,
        mask_w_t=[-0.4, 0.6, 0.2, -0.1], mask_b_t=-0.3,
        w1_s=[[0.2, -0.5, 0.3, 0.1], [-0.3, 0.4, 0.2, -0.6]],
        b1_s=[0.1, -0.2],
        w1_t=[[0.5, 0.1, -0.2, 0.3], [0.2, -0.4, 0.6, 0.1]],
        b1_t=[-0.1, 0.3],
        ln_w_s=[1.2, 0.8], ln_b_s=[0.1, -0.1],
        ln_w_t=[0.9, 1.1], ln_b_t=[0.2, 0.05],
        w2_s=[[0.5, -0.3], [0.2, 0.4], [-0.6, 0.1], [0.3, 0.3]],
        b2_s=[0.1, 0.0, -0.2, 0.3],
        w2_t=[[-0.2, 0.6], [0.4, -0.1], [0.3, 0.2], [0.1, -0.5]],
        b2_t=[0.0, 0.2, 0.1, -0.1],
    )  # fmt: skip
    temp = 0.5
    alpha, beta, gamma, lam = 2.0, 3.0, 5.0, 7.0
    loss = FGDLoss(4, 4, temp, alpha, beta, gamma, lam).double()
    state = {}
    torch.set_default_dtype(torch.float64)  # exact decimal values
    for side in ('s', 't'):
        state[f'conv_mask_{side}.weight'] = torch.tensor(
            p[f'mask_w_{side}']
        ).view(1, 4, 1, 1)
        state[f'conv_mask_{side}.bias'] = torch.tensor([p[f'mask_b_{side}']])
        pre = f'channel_add_conv_{side}'
        state[f'{pre}.0.weight'] = torch.tensor(p[f'w1_{side}']).view(
            2, 4, 1, 1
        )
        state[f'{pre}.0.bias'] = torch.tensor(p[f'b1_{side}'])
        state[f'{pre}.1.weight'] = torch.tensor(p[f'ln_w_{side}']).view(
            2, 1, 1
        )
        state[f'{pre}.1.bias'] = torch.tensor(p[f'ln_b_{side}']).view(2, 1, 1)
        state[f'{pre}.3.weight'] = torch.tensor(p[f'w2_{side}']).view(
            4, 2, 1, 1
        )
        state[f'{pre}.3.bias'] = torch.tensor(p[f'b2_{side}'])
    torch.set_default_dtype(torch.float32)
    loss.load_state_dict(state, strict=True)

    m = metas(((8, 8), (8, 8)))
    gt = [boxes([4, 4, 8, 8])]
    fg, bg = [0.0, 0.0, 0.0, 0.25], [1 / 3, 1 / 3, 1 / 3, 0.0]
    hand = _hand_terms(fs, ft, fg, bg, p, temp)
    weights = dict(fg=alpha, bg=beta, at=gamma, rela=lam)

    to_map = lambda x: torch.tensor(x, dtype=torch.float64).view(1, 4, 2, 2)
    terms = loss(to_map(fs), to_map(ft), gt, m, return_terms=True)
    for key in TERMS:
        assert terms[key].item() == pytest.approx(
            weights[key] * hand[key], rel=1e-10
        ), key
    total = loss(to_map(fs), to_map(ft), gt, m)
    assert total.item() == pytest.approx(
        sum(weights[k] * hand[k] for k in TERMS), rel=1e-10
    )


# --------------------------------------------------------------------------
# the reference computation as the oracle
# --------------------------------------------------------------------------
def random_case(cs, c, h, w, seed, box_scale):
    """Maps, boxes (border, overlaps, an empty image, padding rows) and
    metas with different image shapes, float64."""
    gen = torch.Generator().manual_seed(seed)
    N = 2
    pad_h, pad_w = 8 * h, 8 * w
    shapes = [(pad_h - 5, pad_w), (pad_h, pad_w - 7)]
    gt = []
    for i, (ih, iw) in enumerate(shapes):
        if i == 1 and seed % 2 == 0:
            gt.append(torch.zeros(0, 4, dtype=torch.float64))
            continue
        xy = torch.rand(5, 2, generator=gen) * torch.tensor([iw, ih]) * 0.7
        wh = torch.rand(5, 2, generator=gen) * torch.tensor([iw, ih]) * 0.5
        b = torch.cat([xy, (xy + wh + 1)], dim=1).double()
        b[:, 2].clamp_(max=iw)
        b[:, 3].clamp_(max=ih)
        b[0] = torch.tensor([iw / 2, 0.0, iw, ih / 3])  # touches 2 borders
        b[1] = torch.tensor([iw / 2 + 3, 2.0, iw - 4, ih / 4])  # inside b[0]
        zeros = torch.zeros(2, 4, dtype=torch.float64)
        gt.append(torch.cat([b, zeros]))  # padding rows at the end
    if seed % 2 == 1:
        gt[0] = torch.cat([torch.zeros(1, 4, dtype=torch.float64), gt[0]])
    m = [dict(img_shape=s, batch_input_shape=(pad_h, pad_w)) for s in shapes]
    fs = torch.randn(N, cs, h, w, generator=gen, dtype=torch.float64)
    ft = torch.randn(N, c, h, w, generator=gen, dtype=torch.float64)
    return fs, ft, gt, m


def randomise(loss: FGDLoss, seed: int) -> None:
    """Nonzero random values for every parameter (so the context path
    and the LayerNorm matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in loss.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


@pytest.mark.parametrize('chunk', [None, 1])
@pytest.mark.parametrize('box_scale', ['pad', 'img_shape'])
@pytest.mark.parametrize(
    'cs,c,h,w', [(6, 8, 7, 9), (4, 4, 5, 5), (5, 6, 1, 6), (4, 4, 6, 3)]
)
def test_matches_reference(cs, c, h, w, box_scale, chunk, monkeypatch):
    """Terms within rtol 1e-6 (atol 1e-10), gradients w.r.t. preds_S,
    preds_T and every parameter within rtol 1e-6 (atol 1e-9), float64.
    ``chunk=1`` makes the map reductions take one channel at a time."""
    if chunk is not None:
        monkeypatch.setattr(fgd_module, '_MAP_CHUNK', chunk)
    seed = cs * 1000 + c * 100 + h * 10 + w
    ours = FGDLoss(cs, c, box_scale=box_scale).double()
    randomise(ours, seed)
    ref = FGDLossReference(
        cs, c, box_scale=box_scale, drop_zero_rows=True
    ).double()
    ref.load_state_dict(ours.state_dict())
    for case_seed in (seed, seed + 1):
        fs, ft, gt, m = random_case(cs, c, h, w, case_seed, box_scale)
        fs.requires_grad_()
        ft.requires_grad_()
        a = ours(fs, ft, gt, m, return_terms=True)
        b = ref(fs, ft, gt, m, return_terms=True)
        for key in TERMS:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-10)
        inputs_a = [fs, ft, *ours.parameters()]
        inputs_b = [fs, ft, *ref.parameters()]
        ga = torch.autograd.grad(sum(a.values()), inputs_a)
        gb = torch.autograd.grad(sum(b.values()), inputs_b)
        names = ['preds_S', 'preds_T'] + [
            n for n, _ in ours.named_parameters()
        ]
        for name, x, y in zip(names, ga, gb):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9, msg=name)


def test_reference_keeps_zero_rows():
    """With padding rows, the reference's default differs from FGDLoss:
    pixel (0, 0) becomes foreground."""
    ours = FGDLoss(4, 4).double()
    ref = FGDLossReference(4, 4, box_scale='pad').double()
    ref.load_state_dict(ours.state_dict())
    fs, ft, gt, m = random_case(4, 4, 5, 5, 3, 'pad')
    assert gt[0][0].eq(0).all()
    a = ours(fs, ft, gt, m, return_terms=True)
    b = ref(fs, ft, gt, m, return_terms=True)
    assert not torch.allclose(a['fg'], b['fg'])
    ref.drop_zero_rows = True
    torch.testing.assert_close(ref(fs, ft, gt, m), ours(fs, ft, gt, m))


def test_attention_matches_reference():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ours = FGDLoss(5, 5, temp=0.7)
    ref = FGDLossReference(5, 5, temp=0.7)
    s, c = ours.get_attention(x)
    s_r, c_r = ref.get_attention(x)
    assert s.shape == (2, 3, 4) and c.shape == (2, 5)
    torch.testing.assert_close(s, s_r)
    torch.testing.assert_close(c, c_r)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------
@pytest.mark.parametrize('chunk', [None, 1])
def test_gradcheck_maps(chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(fgd_module, '_MAP_CHUNK', chunk)
    loss = FGDLoss(3, 4, box_scale='img_shape').double()
    randomise(loss, 0)
    fs, ft, gt, m = random_case(3, 4, 3, 4, 1, 'img_shape')
    fs.requires_grad_()
    ft.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s, t: loss(s, t, gt, m), (fs, ft), eps=1e-6, atol=1e-6
    )


def test_gradcheck_parameters(monkeypatch):
    monkeypatch.setattr(fgd_module, '_MAP_CHUNK', 1)
    loss = FGDLoss(4, 4).double()
    randomise(loss, 1)
    fs, _, gt, m = random_case(4, 4, 3, 3, 2, 'pad')
    ft = torch.randn_like(fs)
    names = [n for n, _ in loss.named_parameters()]
    params = tuple(
        p.detach().clone().requires_grad_() for p in loss.parameters()
    )

    def fn(s, *values):
        state = dict(zip(names, values))
        return torch.func.functional_call(loss, state, (s, ft, gt, m))

    assert torch.autograd.gradcheck(
        fn, (fs.requires_grad_(), *params), eps=1e-6, atol=1e-6
    )


def test_gradients_reach_every_parameter():
    # 8 channels: a LayerNorm over C // 2 = 2 values is flat (+-1)
    torch.manual_seed(0)
    loss = FGDLoss(3, 8)
    randomise(loss, 2)
    fs = torch.randn(2, 3, 5, 6, requires_grad=True)
    with torch.no_grad():
        ft = torch.randn(2, 8, 5, 6)
    gt = [boxes([0, 0, 20, 20]), boxes([10, 5, 40, 30])]
    m = metas(((40, 48), (40, 48)), ((40, 48), (40, 48)))
    loss(fs, ft, gt, m).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    for name, p in loss.named_parameters():
        assert p.grad is not None, name
        if name.startswith('conv_mask') and name.endswith('.bias'):
            # the context softmax over positions is shift-invariant: the
            # bias of its logits has no effect and, exactly, no gradient
            # (it was asserted > 0 and passed on rounding noise)
            assert p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------
# half precision
# --------------------------------------------------------------------------
def _half_case():
    torch.manual_seed(0)
    loss = FGDLoss(6, 8)
    fs = torch.randn(2, 6, 8, 10) * 30
    ft = torch.randn(2, 8, 8, 10) * 30
    gt = [boxes([4, 4, 40, 30]), boxes()]
    m = metas(((64, 80), (64, 80)), ((64, 80), (64, 80)))
    return loss, fs, ft, gt, m


def test_bf16_autocast_is_finite_and_close_to_fp32():
    loss, fs, ft, gt, m = _half_case()
    expected = loss(fs, ft, gt, m, return_terms=True)
    fs.requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = loss(fs, ft, gt, m, return_terms=True)
        # maps that come out of an autocast network are bfloat16
        got_bf16 = loss(fs.bfloat16(), ft.bfloat16(), gt, m, return_terms=True)
    for key in TERMS:
        assert got[key].dtype == torch.float32
        assert torch.isfinite(got_bf16[key])
        torch.testing.assert_close(got[key], expected[key])
        torch.testing.assert_close(
            got_bf16[key].float(), expected[key], rtol=5e-2, atol=1e-6
        )
    sum(got_bf16.values()).backward()
    assert fs.grad.dtype == torch.float32 and torch.isfinite(fs.grad).all()


def test_fp16_inputs_are_finite():
    loss, fs, ft, gt, m = _half_case()
    # the squared differences summed in float16 would overflow (> 65504)
    assert ft.pow(2).sum() > 65504
    terms = loss(fs.half(), ft.half(), gt, m, return_terms=True)
    expected = loss(fs.half().float(), ft.half().float(), gt, m, True)
    for key in TERMS:
        assert torch.isfinite(terms[key])
        torch.testing.assert_close(terms[key], expected[key])


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    'kwargs,match',
    [
        (dict(student_channels=0), 'student_channels'),
        (dict(teacher_channels=1), 'teacher_channels'),
        (dict(teacher_channels=2.0), 'teacher_channels'),
        (dict(temp=0), 'temp'),
        (dict(alpha_fgd=-1), 'alpha_fgd'),
        (dict(beta_fgd=-1e-3), 'beta_fgd'),
        (dict(gamma_fgd=float('nan')), 'gamma_fgd'),
        (dict(lambda_fgd=-1), 'lambda_fgd'),
        (dict(box_scale='batch'), 'box_scale'),
    ],
)
def test_bad_constructor_args(kwargs, match):
    args = dict(student_channels=4, teacher_channels=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FGDLoss(**args)


def test_bad_inputs():
    loss = FGDLoss(3, 4)
    fs, ft = torch.randn(2, 3, 4, 5), torch.randn(2, 4, 4, 5)
    gt = [boxes([0, 0, 8, 8]), boxes()]
    m = metas(((16, 20), (16, 20)), ((16, 20), (16, 20)))
    loss(fs, ft, gt, m)
    with pytest.raises(ValueError, match=r'spatial.*\(2, 3, 4, 6\).*'):
        loss(torch.randn(2, 3, 4, 6), ft, gt, m)
    with pytest.raises(ValueError, match='student_channels'):
        loss(torch.randn(2, 4, 4, 5), ft, gt, m)
    with pytest.raises(ValueError, match='teacher_channels'):
        loss(fs, torch.randn(2, 3, 4, 5), gt, m)
    with pytest.raises(ValueError, match='gt_bboxes'):
        loss(fs, ft, gt[:1], m)
    with pytest.raises(ValueError, match='batch_img_metas'):
        loss(fs, ft, gt, m[:1])
    bad = [dict(img_shape=(16, 20)), dict(img_shape=(16, 20))]
    with pytest.raises(KeyError, match='batch_input_shape'):
        loss(fs, ft, gt, bad)
    # img_shape scaling needs no batch_input_shape
    FGDLoss(3, 4, box_scale='img_shape')(fs, ft, gt, bad)
    with pytest.raises(KeyError, match='img_shape'):
        loss(fs, ft, gt, [dict(batch_input_shape=(16, 20))] * 2)


# --------------------------------------------------------------------------
# checkpoints, registry, terms
# --------------------------------------------------------------------------
def reference_keys(align: bool) -> set:
    keys = set()
    for side in ('s', 't'):
        keys |= {f'conv_mask_{side}.weight', f'conv_mask_{side}.bias'}
        for i in (0, 1, 3):
            keys |= {
                f'channel_add_conv_{side}.{i}.weight',
                f'channel_add_conv_{side}.{i}.bias',
            }
    if align:
        keys |= {'align.weight', 'align.bias'}
    return keys


@pytest.mark.parametrize('cs', [6, 8])
def test_loads_reference_state_dict(cs):
    C, half = 8, 4
    shapes = {
        'conv_mask_{}.weight': (1, C, 1, 1),
        'conv_mask_{}.bias': (1,),
        'channel_add_conv_{}.0.weight': (half, C, 1, 1),
        'channel_add_conv_{}.0.bias': (half,),
        'channel_add_conv_{}.1.weight': (half, 1, 1),
        'channel_add_conv_{}.1.bias': (half, 1, 1),
        'channel_add_conv_{}.3.weight': (C, half, 1, 1),
        'channel_add_conv_{}.3.bias': (C,),
    }
    state = {
        key.format(side): torch.randn(shape)
        for key, shape in shapes.items()
        for side in ('s', 't')
    }
    if cs != C:
        state['align.weight'] = torch.randn(C, cs, 1, 1)
        state['align.bias'] = torch.randn(C)
    assert set(state) == reference_keys(align=cs != C)
    loss = FGDLoss(cs, C, name='loss_fgd_fpn_0')
    assert set(loss.state_dict()) == set(state)
    assert (loss.align is None) == (cs == C)
    loss.load_state_dict(state, strict=True)
    for key, value in state.items():
        torch.testing.assert_close(loss.state_dict()[key], value)


def test_init():
    loss = FGDLoss(4, 6)
    for side in ('s', 't'):
        mask = getattr(loss, f'conv_mask_{side}')
        last = getattr(loss, f'channel_add_conv_{side}')[3]
        assert mask.bias.eq(0).all() and mask.weight.abs().sum() > 0
        assert last.weight.eq(0).all() and last.bias.eq(0).all()


def test_registered_and_terms_sum_to_total():
    loss = MODELS.build(
        dict(
            type='FGDLoss',
            student_channels=4,
            teacher_channels=4,
            name='loss_fgd_fpn_0',
            box_scale='img_shape',
        )
    )
    assert isinstance(loss, FGDLoss) and loss.box_scale == 'img_shape'
    randomise(loss, 5)
    fs, ft = torch.randn(2, 4, 5, 6), torch.randn(2, 4, 5, 6)
    gt = [boxes([0, 0, 20, 20]), boxes([10, 5, 40, 30], [0, 0, 0, 0])]
    m = metas(((40, 48), (40, 48)), ((36, 44), (40, 48)))
    terms = loss(fs, ft, gt, m, return_terms=True)
    assert set(terms) == set(TERMS)
    torch.testing.assert_close(sum(terms.values()), loss(fs, ft, gt, m))
