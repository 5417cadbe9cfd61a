# Copyright (c) mmvfm contributors. All rights reserved.
"""The SiA op: hand-computed cases, w = 0 is plain attention, the folded
(SDPA) form equals the explicit reference, gradients, shapes, errors.

The op file is loaded by path so that this test needs torch alone (no
mmcv/mmdet), e.g. on a GPU machine:
``python -m pytest --noconftest tests/test_ops/test_similar_attention.py``.
"""

import importlib.util
import math
import os.path as osp

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (on a busy machine, OpenMP barriers make
    small ops with several threads 10x slower). Its own copy of
    tests/conftest.py's ``one_thread``: this file also runs with
    ``--noconftest`` on machines without mmcv/mmdet."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_PATH = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'mmvfm',
    'ops',
    'similar_attention.py',
)
_spec = importlib.util.spec_from_file_location('_sia_op', _PATH)
sa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sa)

DEVICES = [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason='needs CUDA'
        ),
    ),
]
F64 = torch.float64


def _hand_inputs(pad_col3=False):
    """B = H = Nq = Dh = Dv = 1; level 0 is 1x2 with logits [0, ln 3]
    (S_0 = [1/4, 3/4]), level 1 is 2x4 with zero logits; values 1, 2 and
    1..8 row-major. With ``pad_col3`` the last column of level 1 is
    padded (level 0 keeps two valid children in its right cell)."""
    q = torch.ones(1, 1, 1, 1, dtype=F64)
    k0 = torch.tensor([0.0, math.log(3)], dtype=F64).view(1, 1, 1, 2, 1)
    k1 = torch.zeros(1, 1, 2, 4, 1, dtype=F64)
    v0 = torch.tensor([1.0, 2.0], dtype=F64).view(1, 1, 1, 2, 1)
    v1 = torch.arange(1.0, 9.0, dtype=F64).view(1, 1, 2, 4, 1)
    masks = None
    if pad_col3:
        m1 = torch.zeros(1, 2, 4, dtype=torch.bool)
        m1[..., 3] = True
        masks = [torch.zeros(1, 1, 2, dtype=torch.bool), m1]
    return q, [k0, k1], [v0, v1], masks


def _w(value):
    return torch.tensor([[value]], dtype=F64)


@pytest.mark.parametrize('impl', ['pytorch', 'sdpa'])
def test_hand_computed_prob(impl):
    # A_1 = 0.5 * 1/8 + 0.5 * U(A_0): 3/32 on the left half (U = 1/16),
    # 5/32 on the right half (U = 3/16); out = 7/4 + (14*3 + 22*5) / 32
    q, ks, vs, _ = _hand_inputs()
    out = sa.similar_attention(
        q, ks, vs, _w(0.5), 'prob', scale=1.0, impl=impl
    )
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(1.75 + 152 / 32, abs=1e-12)
    if impl == 'pytorch':
        _, maps = sa.similar_attention(
            q, ks, vs, _w(0.5), 'prob', scale=1.0, return_attn=True
        )
        expected = torch.tensor([[3, 3, 5, 5], [3, 3, 5, 5]], dtype=F64)
        torch.testing.assert_close(maps[1][0, 0, 0], expected / 32)
        torch.testing.assert_close(
            maps[0][0, 0, 0], torch.tensor([[0.25, 0.75]], dtype=F64)
        )


@pytest.mark.parametrize('impl', ['pytorch', 'sdpa'])
def test_hand_computed_prob_padded(impl):
    # 6 valid cells (S_1 = 1/6); U: 1/16 on the 4 left cells, 3/8 on the 2
    # valid children of the right cell; A_1 = 11/96 left, 26/96 column 2
    q, ks, vs, masks = _hand_inputs(pad_col3=True)
    out, maps = None, None
    if impl == 'pytorch':
        out, maps = sa.similar_attention_pytorch(
            q, ks, vs, _w(0.5), 'prob', masks, scale=1.0, return_attn=True
        )
        expected = torch.tensor([[11, 11, 26, 0], [11, 11, 26, 0]]) / 96
        torch.testing.assert_close(maps[1][0, 0, 0], expected.to(F64))
    else:
        out = sa.similar_attention_sdpa(
            q, ks, vs, _w(0.5), 'prob', masks, scale=1.0
        )
    assert out.item() == pytest.approx(1.75 + 414 / 96, abs=1e-12)


def test_hand_computed_logit():
    q, ks, vs, masks = _hand_inputs()
    # w = 1 with flat fine logits: A_1 = U(A_0) -> out_1 = (14 + 66) / 16
    out = sa.similar_attention(q, ks, vs, _w(1.0), 'logit', scale=1.0)
    assert out.item() == pytest.approx(1.75 + 5.0, abs=1e-12)
    # w = 0.5: A_1 ∝ sqrt(U(A_0)), i.e. 1 : sqrt(3) between the halves
    out = sa.similar_attention(q, ks, vs, _w(0.5), 'logit', scale=1.0)
    s3 = math.sqrt(3)
    assert out.item() == pytest.approx(
        1.75 + (14 + 22 * s3) / (4 * (1 + s3)), abs=1e-12
    )
    # padded: A_1 = U(A_0) = 1/16 left, 3/8 on column 2
    q, ks, vs, masks = _hand_inputs(pad_col3=True)
    out = sa.similar_attention(q, ks, vs, _w(1.0), 'logit', masks, scale=1.0)
    assert out.item() == pytest.approx(1.75 + 14 / 16 + 10 * 3 / 8, abs=1e-12)


def _random_inputs(
    sizes=((2, 3), (4, 6), (8, 12)),
    B=2,
    Nq=5,
    H=3,
    D=4,
    Dv=6,
    dtype=F64,
    device='cpu',
    grad=False,
    seed=0,
):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        t = torch.randn(*shape, generator=g, dtype=dtype).to(device)
        return t.requires_grad_(grad)

    q = rnd(B, Nq, H, D)
    ks = [rnd(B, H, h, w, D) for h, w in sizes]
    vs = [rnd(B, H, h, w, Dv) for h, w in sizes]
    fw = (
        (torch.rand(len(sizes) - 1, H, generator=g, dtype=dtype) * 0.8 + 0.1)
        .to(device)
        .requires_grad_(grad)
    )
    return q, ks, vs, fw


def _image_masks(sizes, img_hw, batch_hw):
    """Per-level masks of images ``img_hw`` (list of (h, w)) padded to
    ``batch_hw``, with ceil(img / stride) valid rows and columns."""
    masks = []
    for h, w in sizes:
        m = torch.ones(len(img_hw), h, w, dtype=torch.bool)
        for i, (ih, iw) in enumerate(img_hw):
            rows = -(-ih * h // batch_hw[0])
            cols = -(-iw * w // batch_hw[1])
            m[i, :rows, :cols] = False
        masks.append(m)
    return masks


SIZES = ((2, 3), (4, 6), (8, 12))
MASKS = _image_masks(SIZES, [(64, 96), (37, 50)], (64, 96))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('mode', ['prob', 'logit'])
def test_zero_weight_is_plain_attention(device, masked, mode):
    q, ks, vs, fw = _random_inputs(device=device)
    masks = [m.to(device) for m in MASKS] if masked else None
    plain = sa.similar_attention_pytorch(q, ks, vs, None, None, masks)
    zero = torch.zeros_like(fw)
    for impl in ['pytorch', 'sdpa'] if mode == 'prob' else ['pytorch']:
        out = sa.similar_attention(q, ks, vs, zero, mode, masks, impl=impl)
        torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
    # plain attention is per-level softmax attention summed over levels
    ref = 0
    for lvl, (k, v) in enumerate(zip(ks, vs)):
        logits = torch.einsum('bqhd,bhxyd->bhqxy', q, k) / 2.0  # Dh = 4
        if masked:
            logits = logits.masked_fill(masks[lvl][:, None, None], -math.inf)
        a = logits.flatten(-2).softmax(-1)
        ref = ref + torch.einsum('bhqn,bhnd->bqhd', a, v.flatten(2, 3))
    torch.testing.assert_close(plain, ref, rtol=1e-12, atol=1e-12)
    sdpa_plain = sa.similar_attention_sdpa(q, ks, vs, None, None, masks)
    torch.testing.assert_close(sdpa_plain, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('mode', ['prob', 'logit'])
def test_sdpa_folding_equals_reference(device, masked, mode):
    """Value folding ('prob') and key folding with the cascaded padding
    bias ('logit', any w >= 0) equal the explicit maps, and so do the
    gradients of every input."""
    q, ks, vs, fw = _random_inputs(device=device, grad=True)
    if mode == 'logit':
        fw = (fw * 1.7).detach().requires_grad_()
    masks = [m.to(device) for m in MASKS] if masked else None
    ref = sa.similar_attention_pytorch(q, ks, vs, fw, mode, masks)
    out = sa.similar_attention_sdpa(q, ks, vs, fw, mode, masks)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs = [q, fw, *ks, *vs]
    g_ref = torch.autograd.grad(ref.square().sum(), inputs)
    g_out = torch.autograd.grad(out.square().sum(), inputs)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('device', DEVICES)
def test_float32_sdpa_close_to_float64_reference(device):
    q, ks, vs, fw = _random_inputs(device=device)
    ref = sa.similar_attention_pytorch(q, ks, vs, fw, 'prob', MASKS)
    to32 = [t.float() for t in (q, *ks, *vs, fw)]
    q32, ks32, vs32, fw32 = to32[0], to32[1:4], to32[4:7], to32[7]
    masks = [m.to(device) for m in MASKS]
    out = sa.similar_attention(q32, ks32, vs32, fw32, 'prob', masks)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mode', ['prob', 'logit'])
@pytest.mark.parametrize('masked', [False, True])
def test_maps_are_distributions(mode, masked):
    q, ks, vs, fw = _random_inputs()
    masks = MASKS if masked else None
    if mode == 'logit':
        fw = fw * 1.5  # any w >= 0; prob mode needs w in [0, 1]
    out, maps = sa.similar_attention(
        q, ks, vs, fw, mode, masks, return_attn=True
    )
    assert out.shape == (2, 5, 3, 6)
    for lvl, (a, (h, w)) in enumerate(zip(maps, SIZES)):
        assert a.shape == (2, 3, 5, h, w)
        assert (a >= 0).all()
        torch.testing.assert_close(
            a.sum((-1, -2)), torch.ones(2, 3, 5, dtype=F64)
        )
        if masked:
            assert (a.masked_select(MASKS[lvl][:, None, None]) == 0).all()


def test_prob_weight_one_copies_coarse_map():
    q, ks, vs, fw = _random_inputs()
    _, maps = sa.similar_attention(
        q, ks, vs, torch.ones_like(fw), 'prob', MASKS, return_attn=True
    )
    for lvl in (1, 2):
        torch.testing.assert_close(
            maps[lvl], sa.upsample_prior(maps[lvl - 1], MASKS[lvl])
        )
    # the finest map is the coarsest map spread over its descendants
    assert maps[2].sum((-1, -2)).allclose(torch.ones(2, 3, 5, dtype=F64))


@pytest.mark.parametrize(
    'mode,impl',
    [
        ('prob', 'pytorch'),
        ('prob', 'sdpa'),
        ('logit', 'pytorch'),
        ('logit', 'sdpa'),
    ],
)
def test_gradient_reaches_fusion_weights(mode, impl):
    q, ks, vs, fw = _random_inputs(grad=True)
    out = sa.similar_attention(q, ks, vs, fw, mode, MASKS, impl=impl)
    (grad,) = torch.autograd.grad(out.sum() + out.square().sum(), fw)
    assert grad.shape == fw.shape
    assert torch.isfinite(grad).all() and (grad != 0).all()


@pytest.mark.parametrize(
    'mode,impl',
    [
        ('prob', 'pytorch'),
        ('prob', 'sdpa'),
        ('logit', 'pytorch'),
        ('logit', 'sdpa'),
    ],
)
@pytest.mark.parametrize('masked', [False, True])
def test_gradcheck(mode, impl, masked):
    sizes = ((1, 2), (2, 4))
    q, ks, vs, fw = _random_inputs(sizes, B=2, Nq=2, H=2, D=2, Dv=2, grad=True)
    masks = _image_masks(sizes, [(8, 16), (4, 9)], (8, 16)) if masked else None

    def fn(q, fw, k0, k1, v0, v1):
        return sa.similar_attention(
            q, [k0, k1], [v0, v1], fw, mode, masks, impl=impl
        )

    assert torch.autograd.gradcheck(fn, (q, fw, *ks, *vs))


@pytest.mark.parametrize('impl', ['pytorch', 'sdpa'])
def test_non_square_shapes_and_empty_queries(impl):
    sizes = ((3, 1), (6, 2), (12, 4), (24, 8))
    q, ks, vs, fw = _random_inputs(sizes, B=1, Nq=7, H=2, D=3, Dv=5)
    assert sa.similar_attention(q, ks, vs, fw, impl=impl).shape == (
        1,
        7,
        2,
        5,
    )
    out = sa.similar_attention(q[:, :0], ks, vs, fw, impl=impl)
    assert out.shape == (1, 0, 2, 5)
    one = sa.similar_attention(q, ks[:1], vs[:1], fw[:0], impl=impl)
    assert one.shape == (1, 7, 2, 5)


def test_errors():
    q, ks, vs, fw = _random_inputs()
    with pytest.raises(ValueError, match='level 2: expected 8x12'):
        sa.similar_attention(
            q, ks[:2] + [ks[2][:, :, :7]], vs[:2] + [vs[2][:, :, :7]], fw
        )
    with pytest.raises(ValueError, match='level 1: .*look fine to coarse'):
        sa.similar_attention(q, ks[::-1], vs[::-1], fw, mode=None)
    with pytest.raises(ValueError, match=r'fusion_weights must be \(L - 1'):
        sa.similar_attention(q, ks, vs, torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ValueError, match='mode must be one of'):
        sa.similar_attention(q, ks, vs, fw, mode='add')
    with pytest.raises(ValueError, match='impl must be one of'):
        sa.similar_attention(q, ks, vs, fw, impl='cuda')
    with pytest.raises(ValueError, match='return_attn'):
        sa.similar_attention(q, ks, vs, fw, return_attn=True, impl='sdpa')
    with pytest.raises(ValueError, match='level 1: values'):
        sa.similar_attention(q, ks, [vs[0], vs[1][..., :2], vs[2]], fw)
    bad = [m.clone() for m in MASKS]
    bad[2][1, 0, 0] = True  # a valid coarse cell keeps valid children...
    bad[1][1, :, :] = True  # ...but its parent level is fully padded
    for impl in ('pytorch', 'sdpa'):
        with pytest.raises(ValueError, match='level 1: key padding masks'):
            sa.similar_attention(q, ks, vs, fw, 'prob', bad, impl=impl)
    with pytest.raises(ValueError, match='level 0: key padding mask'):
        sa.similar_attention(q, ks, vs, fw, 'prob', [MASKS[1]] * 3)
