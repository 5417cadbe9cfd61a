# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD's chunked map reductions against their pure-PyTorch twins: a
hand-computed case, float64 tight and float32 loose, every chunk size,
gradients (against the twin and ``gradcheck``), partial ``requires_grad``,
errors.

The op file is loaded by path so that this test needs torch alone (no
mmcv/mmdet), e.g. on a GPU machine:
``python -m pytest --noconftest tests/test_ops/test_fgd_reductions.py``.
FGDLoss against the reference computation is tested in
tests/test_models/test_losses/test_fgd_loss.py.
"""

import importlib.util
import os.path as osp

import pytest
import torch

_PATH = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'mmvfm',
    'ops',
    'fgd_reductions.py',
)
_spec = importlib.util.spec_from_file_location('_fgd_op', _PATH)
op = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(op)

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
# None: the default chunk (all channels at once here); 1, 2: chunks that
# split the channels (2 leaves a short last chunk for C = 5)
STEPS = [None, 1, 2]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (see tests/conftest.py's ``one_thread``;
    this file also runs with ``--noconftest``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _map_inputs(N=2, C=5, L=7, dtype=F64, device='cpu', seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, L, generator=gen, dtype=dtype).to(device)
    w = torch.randn(C, generator=gen, dtype=dtype).to(device)
    return x, w


def _pair_inputs(N=2, C=5, L=7, dtype=F64, device='cpu', seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    fs, ft = randn(N, C, L), randn(N, C, L)
    c = randn(N, C).exp()  # positive, as a channel attention
    p_s, p_t = randn(N, L).softmax(-1), randn(N, L).softmax(-1)
    return fs, ft, c, p_s, p_t


def _grads(outputs, inputs, seed=1):
    """Gradients of ``sum_k <g_k, out_k>`` for random ``g_k``."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(
        (torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o) * o).sum()
        for o in outputs
    )
    return torch.autograd.grad(total, inputs)


def _leaf(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


# --------------------------------------------------------------------------
# hand-computed
# --------------------------------------------------------------------------
def test_map_stats_by_hand():
    # one image, C = 2 channels, L = 3 pixels
    x = torch.tensor([[[1.0, -2.0, 3.0], [-4.0, 5.0, 0.0]]], dtype=F64)
    w = torch.tensor([2.0, -1.0], dtype=F64)
    for impl in op.IMPLS:
        sum_c, sum_l, logit = op.fgd_map_stats(x, w, step=1, impl=impl)
        torch.testing.assert_close(sum_c, x.new_tensor([[5.0, 7.0, 3.0]]))
        torch.testing.assert_close(sum_l, x.new_tensor([[6.0, 9.0]]))
        torch.testing.assert_close(logit, x.new_tensor([[6.0, -9.0, 6.0]]))


def test_pair_stats_by_hand():
    fs = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]], dtype=F64)  # N=1, C=2
    ft = torch.tensor([[[0.0, 4.0], [1.0, 1.0]]], dtype=F64)
    c = torch.tensor([[2.0, 0.5]], dtype=F64)
    p_s = torch.tensor([[0.25, 0.75]], dtype=F64)
    p_t = torch.tensor([[1.0, 0.0]], dtype=F64)
    # diff = [[1, -2], [2, -1]]
    for impl in op.IMPLS:
        P, r1, r2, ctx_s, ctx_t = op.fgd_pair_stats(
            fs, ft, c, p_s, p_t, step=1, impl=impl
        )
        # P[l] = 2 * diff[0, l]^2 + 0.5 * diff[1, l]^2
        torch.testing.assert_close(P, fs.new_tensor([[4.0, 8.5]]))
        torch.testing.assert_close(r1, fs.new_tensor([[-1.0, 1.0]]))
        torch.testing.assert_close(r2, fs.new_tensor([[5.0, 5.0]]))
        torch.testing.assert_close(ctx_s, fs.new_tensor([[1.75, 0.75]]))
        torch.testing.assert_close(ctx_t, fs.new_tensor([[0.0, 1.0]]))


# --------------------------------------------------------------------------
# chunked op == its pure-PyTorch twin
# --------------------------------------------------------------------------
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('step', STEPS)
def test_map_stats_float64_equals_pytorch(device, step):
    x, w = _map_inputs(device=device)
    x, w = _leaf(x, w)
    got = op.fgd_map_stats(x, w, step=step)
    want = op.fgd_map_stats_pytorch(x, w)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, (x, w)), _grads(want, (x, w))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('step', STEPS)
def test_pair_stats_float64_equals_pytorch(device, step):
    inputs = _leaf(*_pair_inputs(device=device))
    got = op.fgd_pair_stats(*inputs, step=step)
    want = op.fgd_pair_stats_pytorch(*inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(got, inputs), _grads(want, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('device', DEVICES)
def test_float32_close_to_pytorch(device):
    x, w = _leaf(*_map_inputs(4, 33, 50, torch.float32, device))
    got = op.fgd_map_stats(x, w, step=8)
    want = op.fgd_map_stats_pytorch(x, w)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(got, (x, w)), _grads(want, (x, w))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    inputs = _leaf(*_pair_inputs(4, 33, 50, torch.float32, device))
    got = op.fgd_pair_stats(*inputs, step=8)
    want = op.fgd_pair_stats_pytorch(*inputs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(got, inputs), _grads(want, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_pytorch_impl_is_the_twin():
    x, w = _map_inputs()
    for a, b in zip(
        op.fgd_map_stats(x, w, impl='pytorch'),
        op.fgd_map_stats_pytorch(x, w),
    ):
        assert torch.equal(a, b)
    inputs = _pair_inputs()
    for a, b in zip(
        op.fgd_pair_stats(*inputs, impl='pytorch'),
        op.fgd_pair_stats_pytorch(*inputs),
    ):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------
@pytest.mark.parametrize('step', [1, 2])
def test_map_stats_gradcheck(step):
    x, w = _leaf(*_map_inputs(2, 3, 4))
    assert torch.autograd.gradcheck(
        lambda a, b: op.FGDMapStatsFunction.apply(a, b, step), (x, w)
    )


@pytest.mark.parametrize('step', [1, 2])
def test_pair_stats_gradcheck(step):
    inputs = _leaf(*_pair_inputs(2, 3, 4))
    assert torch.autograd.gradcheck(
        lambda *a: op.FGDPairStatsFunction.apply(*a, step), inputs
    )


@pytest.mark.parametrize('need', [(0,), (1,), (2,), (3, 4), (0, 2)])
def test_pair_stats_partial_requires_grad(need):
    """Only some inputs need a gradient (e.g. a teacher map without grad):
    those gradients still equal the twin's, the others are None."""
    base = _pair_inputs()
    inputs = [
        t.clone().requires_grad_() if i in need else t
        for i, t in enumerate(base)
    ]
    wanted = [inputs[i] for i in need]
    got = _grads(op.fgd_pair_stats(*inputs, step=2), wanted)
    want = _grads(op.fgd_pair_stats_pytorch(*inputs), wanted)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_map_stats_weight_without_grad():
    x, w = _map_inputs()
    x = x.requires_grad_()
    (g,) = _grads(op.fgd_map_stats(x, w, step=2), (x,))
    (g_ref,) = _grads(op.fgd_map_stats_pytorch(x, w), (x,))
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    x, w = _map_inputs()
    with pytest.raises(ValueError, match='impl'):
        op.fgd_map_stats(x, w, impl='cuda')
    with pytest.raises(ValueError, match=r'weight \(C,\)'):
        op.fgd_map_stats(x, w[:-1])
    with pytest.raises(ValueError, match=r'\(N, C, L\)'):
        op.fgd_map_stats(x[0], w)
    fs, ft, c, p_s, p_t = _pair_inputs()
    with pytest.raises(ValueError, match='impl'):
        op.fgd_pair_stats(fs, ft, c, p_s, p_t, impl='auto')
    with pytest.raises(ValueError, match='fs and ft'):
        op.fgd_pair_stats(fs, ft[:, :-1], c, p_s, p_t)
    with pytest.raises(ValueError, match='^c must'):
        op.fgd_pair_stats(fs, ft, c[:, :-1], p_s, p_t)
    with pytest.raises(ValueError, match='^p_t must'):
        op.fgd_pair_stats(fs, ft, c, p_s, p_t[:, :-1])
