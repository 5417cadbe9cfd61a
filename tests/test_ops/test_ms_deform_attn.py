# Copyright (c) mmvfm contributors. All rights reserved.
"""The compiled multi-scale deformable attention (CPU kernel, and the CUDA
kernel where there is a GPU) against the pure-PyTorch reference.

The op file is loaded by path and the kernels are JIT-compiled when
``mmvfm._ext`` is not built, so this test needs torch (and a compiler)
alone, e.g. on a GPU machine without mmcv/mmdet:
``python -m pytest --noconftest tests/test_ops/test_ms_deform_attn.py``.
mmcv's own fallback as the oracle and the module dispatch are tested in
test_ms_deform_attn_dispatch.py.
"""

import importlib.util
import os.path as osp
import sys
import tempfile

import pytest
import torch

_PATH = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'mmvfm',
    'ops',
    'ms_deform_attn.py',
)
_spec = importlib.util.spec_from_file_location('_msda_op', _PATH)
op = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = op  # torch.compile looks modules up by name
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


@pytest.fixture(scope='module', autouse=True)
def kernels():
    """The compiled ops: mmvfm._ext, else compiled here (1-2 min)."""
    if not op.ext_available():
        op.load_ext_jit(
            build_directory=tempfile.mkdtemp(prefix='mmvfm_ext_'),
            with_cuda=torch.cuda.is_available(),
        )
    assert op.ext_available()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (see tests/conftest.py's ``one_thread``;
    this file also runs with ``--noconftest``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(
    B=2,
    H=3,
    C=4,
    Q=6,
    P=3,
    shapes=((4, 5), (2, 3), (1, 1)),
    dtype=F64,
    device='cpu',
    seed=0,
):
    """Random inputs; locations in [-0.2, 1.2] (some outside the maps)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes)
    K = int(shapes.prod(1).sum())
    L = shapes.shape[0]
    value = torch.randn(B, K, H, C, generator=gen, dtype=F64)
    loc = torch.rand(B, Q, H, L, P, 2, generator=gen, dtype=F64) * 1.4 - 0.2
    attn = torch.rand(B, Q, H, L, P, generator=gen, dtype=F64)
    return [
        t.to(device=device, dtype=dtype) if t.is_floating_point() else t
        for t in (value, shapes, loc, attn)
    ]


def _special_locations(shapes, B, Q, H, P):
    """Locations on pixel centres, on the borders of the sampled area, on
    the image edges and outside, for every level (x, y in normalised
    units; pixel coordinate = x * w - 0.5)."""
    per_level = []
    for h, w in shapes.tolist():
        xs = torch.tensor(
            [
                0.5 / w,  # first pixel centre
                (w - 0.5) / w,  # last pixel centre
                (w // 2 + 0.5) / w,  # an inner pixel centre
                0.0,  # image edge: half a pixel outside the first centre
                1.0,  # image edge on the other side
                -0.25 / w,  # between the edge and one pixel out
                (w + 0.25) / w,
                -2.0,  # far outside
                3.0,
            ],
            dtype=F64,
        )
        ys = torch.tensor(
            [(i % h + 0.5) / h for i in range(len(xs))], dtype=F64
        ).flip(0)
        pts = torch.stack([xs, ys], -1)  # [n, 2]
        idx = torch.arange(Q * H * P) % len(pts)
        per_level.append(pts[idx].view(Q, H, P, 2))
    loc = torch.stack(per_level, dim=2)  # [Q, H, L, P, 2]
    return loc.unsqueeze(0).expand(B, -1, -1, -1, -1, -1).clone()


def _grads(fn, value, shapes, loc, attn, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], shapes, leaves[1], leaves[2])
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def _assert_matches_reference(value, shapes, loc, attn, atol, rtol):
    gen = torch.Generator().manual_seed(1)
    B, Q = loc.shape[:2]
    grad_out = torch.randn(
        B, Q, value.shape[2] * value.shape[3], generator=gen, dtype=F64
    ).to(value)
    out_r, grads_r = _grads(
        op.ms_deform_attn_pytorch, value, shapes, loc, attn, grad_out
    )
    out_k, grads_k = _grads(
        op.ms_deform_attn, value, shapes, loc, attn, grad_out
    )
    torch.testing.assert_close(out_k, out_r, atol=atol, rtol=rtol)
    for name, gk, gr in zip(('value', 'loc', 'attn'), grads_k, grads_r):
        torch.testing.assert_close(gk, gr, atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize('device', DEVICES)
def test_float64_equals_reference_random_points(device):
    inputs = _inputs(device=device)
    _assert_matches_reference(*inputs, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize('device', DEVICES)
def test_float64_pixel_centres_borders_and_outside(device):
    """Pixel centres, the image edges, points between the edge and one
    pixel out (one neighbour row/column in the map) and far outside
    (nothing sampled, zero gradients).

    On a pixel centre the location gradient is one-sided, towards the next
    pixel (floor of ``x w - 0.5``, mmcv's CUDA convention). The sizes are
    powers of two, so the centres are exact in floating point for both
    implementations (with ``w = 3``, ``(1/6) * 3 - 0.5`` is 0 or -3e-17
    depending on whether the compiler fuses it into an FMA, and the side
    of the one-sided derivative with it).
    """
    value, shapes, loc, attn = _inputs(
        shapes=((4, 8), (2, 4), (1, 2)), device=device
    )
    B, Q, H, L, P = attn.shape
    loc = _special_locations(shapes, B, Q, H, P).to(device)
    _assert_matches_reference(value, shapes, loc, attn, 1e-12, 1e-12)
    grad_out = torch.ones(B, Q, H * value.shape[3], dtype=F64, device=device)
    # far outside: no output and no gradient from those points
    far = loc.clone().fill_(-2.0)
    out, grads = _grads(op.ms_deform_attn, value, shapes, far, attn, grad_out)
    assert out.abs().max() == 0
    assert all(g.abs().max() == 0 for g in grads)


@pytest.mark.parametrize('device', DEVICES)
def test_float32_close_to_reference(device):
    inputs = _inputs(B=2, H=4, C=32, Q=40, P=4, dtype=torch.float32)
    _assert_matches_reference(
        *[t.to(device) for t in inputs], atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize('device', DEVICES)
def test_gradcheck(device):
    value, shapes, loc, attn = _inputs(B=1, H=2, C=2, Q=3, P=2, device=device)
    shapes = shapes.to(device)
    leaves = [t.requires_grad_() for t in (value, loc, attn)]
    assert torch.autograd.gradcheck(
        lambda v, xy, a: op.ms_deform_attn(v, shapes, xy, a), leaves
    )


@pytest.mark.parametrize('device', DEVICES)
def test_non_contiguous_inputs(device):
    value, shapes, loc, attn = _inputs(device=device)
    # same values, other strides
    value_nc = value.transpose(1, 2).contiguous().transpose(1, 2)
    loc_nc = torch.stack([loc[..., 0], loc[..., 1]], dim=0).movedim(0, -1)
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (
        value_nc.is_contiguous()
        or loc_nc.is_contiguous()
        or attn_nc.is_contiguous()
    )
    expected = op.ms_deform_attn(value, shapes, loc, attn)
    torch.testing.assert_close(
        op.ms_deform_attn(value_nc, shapes, loc_nc, attn_nc),
        expected,
        atol=0,
        rtol=0,
    )
    _assert_matches_reference(value_nc, shapes, loc_nc, attn_nc, 1e-12, 1e-12)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('empty', ['queries', 'batch'])
def test_empty_inputs(device, empty):
    kw = dict(Q=0) if empty == 'queries' else dict(B=0)
    value, shapes, loc, attn = _inputs(device=device, **kw)
    leaves = [t.requires_grad_() for t in (value, loc, attn)]
    out = op.ms_deform_attn(leaves[0], shapes, leaves[1], leaves[2])
    assert out.shape == (loc.shape[0], loc.shape[1], 12)
    out.sum().backward()
    for t in leaves:
        assert t.grad.shape == t.shape and t.grad.abs().sum() == 0


def test_cpu_value_gradient_is_deterministic():
    """The same bits for every run and thread count (no atomics)."""
    value, shapes, loc, attn = _inputs(
        B=2, H=4, C=8, Q=300, P=4, dtype=torch.float32, seed=3
    )
    loc = loc * 0.2 + 0.4  # many points share neighbours
    grads = []
    for threads in (1, 2, 2, 1):
        torch.set_num_threads(threads)
        _, (g_value, g_loc, g_attn) = _grads(
            op.ms_deform_attn,
            value,
            shapes,
            loc,
            attn,
            torch.ones(2, 300, 32),
        )
        grads.append(torch.cat([g_value.flatten(), g_loc.flatten()]))
    for g in grads[1:]:
        assert torch.equal(g, grads[0])


def test_cpu_half_precision_and_autocast():
    """float16 / bfloat16 (CPU autocast) are computed in float32 and cast
    back: the result has the input's dtype and the float32 value."""
    value, shapes, loc, attn = _inputs(C=8, dtype=torch.float32)
    expected = op.ms_deform_attn(value, shapes, loc, attn)
    for dtype in (torch.bfloat16, torch.float16):
        out = op.ms_deform_attn(value.to(dtype), shapes, loc, attn)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        v = torch.nn.functional.linear(value, torch.eye(8))  # -> bf16
        assert v.dtype == torch.bfloat16
        out = op.ms_deform_attn(v, shapes, loc, attn)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)


def test_bad_inputs_name_the_argument():
    value, shapes, loc, attn = _inputs()
    starts = torch.tensor([0, 20, 26])
    fwd = torch.ops.mmvfm.ms_deform_attn_forward
    with pytest.raises(RuntimeError, match='attention_weights'):
        fwd(value, shapes, starts, loc, attn[..., :1])
    with pytest.raises(RuntimeError, match=r'level_start_index\[1\] = 19'):
        fwd(value, shapes, torch.tensor([0, 19, 26]), loc, attn)
    with pytest.raises(RuntimeError, match='cover 27 keys, value has 20'):
        fwd(value[:, :20], shapes, starts, loc, attn)
    with pytest.raises(RuntimeError, match='one dtype'):
        fwd(value.float(), shapes, starts, loc, attn)


def test_meta_tensors_and_torch_compile():
    """The fake kernels: shapes on the meta device, and a compiled
    function (fake-tensor tracing) that equals the eager one."""
    value, shapes, loc, attn = _inputs(dtype=torch.float32)
    starts = torch.tensor([0, 20, 26])
    meta = torch.ops.mmvfm.ms_deform_attn_forward(
        *(t.to('meta') for t in (value, shapes, starts, loc, attn))
    )
    assert meta.device.type == 'meta' and meta.shape == (2, 6, 12)

    def fn(v, xy, a):
        return op.ms_deform_attn(v, shapes, xy, a, starts).square().sum()

    leaves = [t.requires_grad_() for t in (value, loc, attn)]
    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    out = compiled(*leaves)
    grads = torch.autograd.grad(out, leaves)
    expected = fn(*leaves)
    expected_grads = torch.autograd.grad(expected, leaves)
    torch.testing.assert_close(out, expected)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)
