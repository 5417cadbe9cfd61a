# Copyright (c) mmvfm contributors. All rights reserved.
"""mmcv's MultiScaleDeformableAttention on the CPU runs mmvfm's kernel
(mmvfm.compat), equal to mmcv's own fallback; ``MMVFM_CPU_MSDA=0`` turns
it off; without the compiled ops mmvfm still imports and the op falls
back with one warning."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmcv.ops import multi_scale_deform_attn as msda

from mmvfm.compat import CPU_MSDA_ENV, mmcv_msda_pytorch
from mmvfm.ops import ext_available, ms_deform_attn

pytestmark = pytest.mark.usefixtures('one_thread')
SHAPES = [(6, 8), (3, 4), (2, 2)]
F64 = torch.float64


def _module_inputs(seed=0, dtype=F64):
    """mmcv's module (32-d, 4 heads, 3 levels, 2 points; its own init plus
    noise on the offsets) and encoder-like inputs."""
    torch.manual_seed(seed)
    attn = MultiScaleDeformableAttention(
        embed_dims=32,
        num_heads=4,
        num_levels=len(SHAPES),
        num_points=2,
        dropout=0.0,
        batch_first=True,
    )
    attn.init_weights()
    with torch.no_grad():
        attn.sampling_offsets.bias.add_(
            torch.randn_like(attn.sampling_offsets.bias)
        )
    attn = attn.to(dtype)
    shapes = torch.tensor(SHAPES)
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    num = int(shapes.prod(1).sum())
    kwargs = dict(
        query=torch.randn(2, num, 32, dtype=dtype),
        query_pos=torch.randn(2, num, 32, dtype=dtype),
        reference_points=torch.rand(2, num, len(SHAPES), 2, dtype=dtype),
        spatial_shapes=shapes,
        level_start_index=starts,
    )
    return attn, kwargs


def _run(attn, kwargs):
    query = kwargs['query'].clone().requires_grad_()
    attn.zero_grad()
    out = attn(**dict(kwargs, query=query, value=query))
    out.square().sum().backward()
    grads = [query.grad] + [p.grad for p in attn.parameters()]
    return out.detach(), grads


def test_dispatch_installed():
    assert ext_available(), (
        "mmvfm's ops are not built: `bash tools/install.sh` builds them"
    )
    fn = msda.multi_scale_deformable_attn_pytorch
    assert getattr(fn, '_mmvfm', False)
    assert mmcv_msda_pytorch() is fn.original


def test_kernel_equals_mmcv_fallback():
    """The op against mmcv's own function (the oracle), float64."""
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor(SHAPES)
    num = int(shapes.prod(1).sum())
    value = torch.randn(2, num, 4, 8, generator=gen, dtype=F64)
    loc = torch.rand(2, 7, 4, 3, 2, 2, generator=gen, dtype=F64) * 1.2 - 0.1
    weights = torch.rand(2, 7, 4, 3, 2, generator=gen, dtype=F64)
    outs, grads = [], []
    for fn in (mmcv_msda_pytorch(), ms_deform_attn):
        leaves = [t.clone().requires_grad_() for t in (value, loc, weights)]
        out = fn(leaves[0], shapes, leaves[1], leaves[2])
        out.square().sum().backward()
        outs.append(out)
        grads.append([t.grad for t in leaves])
    torch.testing.assert_close(outs[1], outs[0], atol=1e-12, rtol=1e-12)
    for g1, g0 in zip(grads[1], grads[0]):
        torch.testing.assert_close(g1, g0, atol=1e-11, rtol=1e-11)


def test_module_runs_kernel_and_switch_turns_it_off(monkeypatch):
    calls = []
    kernel = torch.ops.mmvfm.ms_deform_attn_forward

    class Spy:
        def __call__(self, *args):
            calls.append(1)
            return kernel(*args)

    attn, kwargs = _module_inputs()
    monkeypatch.setattr(
        torch.ops.mmvfm, 'ms_deform_attn_forward', Spy(), raising=False
    )
    out_on, grads_on = _run(attn, kwargs)
    assert calls, "mmcv's module did not reach mmvfm's kernel"
    calls.clear()
    monkeypatch.setenv(CPU_MSDA_ENV, '0')
    out_off, grads_off = _run(attn, kwargs)
    assert not calls
    torch.testing.assert_close(out_on, out_off, atol=1e-12, rtol=1e-12)
    for g_on, g_off in zip(grads_on, grads_off):
        torch.testing.assert_close(g_on, g_off, atol=1e-10, rtol=1e-10)


def _python(code: str, env=None) -> str:
    result = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_module_with_and_without_mmvfm_imported():
    """The same module, the same inputs: mmcv alone (its fallback) in a
    fresh process vs this process (mmvfm imported, the kernel)."""
    helpers = inspect.getsource(_module_inputs) + inspect.getsource(_run)
    code = (
        'import json, sys, torch\n'
        'from mmcv.ops import MultiScaleDeformableAttention\n'
        f'SHAPES, F64 = {SHAPES!r}, torch.float64\n'
        + helpers
        + textwrap.dedent(
            """
            out, grads = _run(*_module_inputs())
            assert 'mmvfm' not in sys.modules
            print(json.dumps([out.flatten().tolist(),
                              grads[0].flatten().tolist()]))
            """
        )
    )
    out = _python(code)
    without = [torch.tensor(x, dtype=F64) for x in json.loads(out)]
    out_with, grads_with = _run(*_module_inputs())
    torch.testing.assert_close(out_with.flatten(), without[0])
    torch.testing.assert_close(grads_with[0].flatten(), without[1])


def test_without_compiled_ops_one_warning_and_reference():
    """No mmvfm._ext (no compiler at install time): mmvfm imports, mmcv's
    fallback stays in place, mmvfm's op warns once and computes."""
    out = _python(
        """
        import sys, warnings
        sys.modules['mmvfm._ext'] = None  # as if never built
        import torch
        import mmvfm
        from mmcv.ops import multi_scale_deform_attn as msda
        from mmvfm.ops import ext_available, ms_deform_attn
        from mmvfm.ops import ms_deform_attn_pytorch
        assert not ext_available()
        assert not hasattr(msda.multi_scale_deformable_attn_pytorch, '_mmvfm')
        shapes = torch.tensor([[4, 5]])
        v = torch.randn(1, 20, 2, 3)
        loc, a = torch.rand(1, 6, 2, 1, 2, 2), torch.rand(1, 6, 2, 1, 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            out = ms_deform_attn(v, shapes, loc, a)
            ms_deform_attn(v, shapes, loc, a)
        ours = [w for w in caught if 'compiled multi-scale' in str(w.message)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert torch.equal(out, ms_deform_attn_pytorch(v, shapes, loc, a))
        print('ok')
        """
    )
    assert out.strip().endswith('ok')
