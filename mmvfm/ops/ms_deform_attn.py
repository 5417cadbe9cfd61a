# Copyright (c) mmvfm contributors. All rights reserved.
"""Multi-scale deformable attention: compiled CPU/CUDA kernels, the
pure-PyTorch reference, and the dispatch between them.

The operator of Deformable DETR (Zhu et al., ICLR 2021), with mmcv 2.x's
layout and sampling conventions (``mmcv.ops.MultiScaleDeformableAttention``
calls it; mmcv ships a CUDA kernel only and falls back to a grid_sample
formulation on the CPU):

- ``value`` (B, K, H, C), ``K = sum_l h_l w_l`` keys of ``L`` levels,
  ``H`` heads of ``C`` channels;
- ``spatial_shapes`` (L, 2) int64 ``(h_l, w_l)``; ``level_start_index``
  (L,) int64, the first key of each level;
- ``sampling_locations`` (B, Q, H, L, P, 2), ``(x, y)`` normalised to
  [0, 1] (pixel coordinate ``x w_l - 0.5``); ``attention_weights``
  (B, Q, H, L, P);
- output (B, Q, H * C): ``sum_{l,p} a * bilinear(value_l, loc)`` with zero
  padding outside the map.

Implementations:

- :func:`ms_deform_attn_pytorch`: the reference (grid_sample, any device
  and dtype, autograd by PyTorch). Tests check the kernels against it.
- ``torch.ops.mmvfm.ms_deform_attn_{forward,backward}``: the C++ CPU
  kernel (``at::parallel_for``, float32/float64, deterministic backward)
  and the CUDA kernel (float32/float64/float16/bfloat16, float32
  accumulation), built by ``MMVFM_WITH_OPS=1 pip install -e .``
  (``mmvfm._ext``) or compiled on first use by :func:`load_ext_jit`.
  Fake (meta) kernels make them traceable by ``torch.compile`` and usable
  on meta tensors.
- :func:`ms_deform_attn`: the kernel through :class:`MSDeformAttnFunction`
  when it is built for the tensors' device, else the reference (one
  warning). On the CPU, half and bfloat16 inputs (CPU autocast) are
  computed in float32 and cast back.

This file imports nothing but torch, so that it can be loaded by path on a
machine with torch alone (no mmcv, mmdet or mmvfm install), together with
``csrc/`` for :func:`load_ext_jit`.
"""

import os
import os.path as osp
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

__all__ = [
    'MSDeformAttnFunction',
    'ext_available',
    'load_ext_jit',
    'ms_deform_attn',
    'ms_deform_attn_pytorch',
]

CSRC = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc')
_KERNEL_DTYPES = {
    'cpu': (torch.float32, torch.float64),
    'cuda': (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}
_warned = False
_kernel_devices: set = set()  # filled when the ops are found


def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The reference: one ``grid_sample`` per level (bilinear, zero padding,
    ``align_corners=False``: pixel coordinate ``x w - 0.5``).

    Args:
        value (Tensor): (B, K, H, C).
        spatial_shapes (Tensor | Sequence): (L, 2) ``(h_l, w_l)``.
        sampling_locations (Tensor): (B, Q, H, L, P, 2), ``(x, y)`` in
            [0, 1].
        attention_weights (Tensor): (B, Q, H, L, P).

    Returns:
        Tensor: (B, Q, H * C).
    """
    B, _, H, C = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    levels = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # [B, h*w, H, C] -> [B*H, C, h, w]
        v = levels[lvl].permute(0, 2, 3, 1).reshape(B * H, C, h, w)
        # [B, Q, H, P, 2] -> [B*H, Q, P, 2]
        grid = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # [B*H, C, Q, P]
        sampled.append(
            F.grid_sample(
                v,
                grid,
                mode='bilinear',
                padding_mode='zeros',
                align_corners=False,
            )
        )
    # [B, Q, H, L, P] -> [B*H, 1, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(B * H, 1, Q, L * P)
    # [B*H, C, Q, L*P] -> [B, H*C, Q] -> [B, Q, H*C]
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(B, H * C, Q).transpose(1, 2).contiguous()


def _ops_registered() -> bool:
    return hasattr(torch.ops, 'mmvfm') and hasattr(
        torch.ops.mmvfm, 'ms_deform_attn_forward'
    )


def _register_fake() -> None:
    """Shape functions for torch.compile / meta tensors, once per process
    (this file may be loaded twice: as ``mmvfm.ops.ms_deform_attn`` and by
    path)."""
    name = 'mmvfm::ms_deform_attn_forward'
    if getattr(torch.ops.mmvfm.ms_deform_attn_forward, '_mmvfm_fake', False):
        return

    def forward_fake(
        value, spatial_shapes, level_start_index, sampling_loc, attn_weight
    ):
        B, _, H, C = value.shape
        return value.new_empty(B, sampling_loc.shape[1], H * C)

    def backward_fake(
        value,
        spatial_shapes,
        level_start_index,
        sampling_loc,
        attn_weight,
        grad_output,
    ):
        return (
            torch.empty_like(value),
            torch.empty_like(sampling_loc),
            torch.empty_like(attn_weight),
        )

    try:
        torch.library.register_fake(name, forward_fake)
        torch.library.register_fake(
            'mmvfm::ms_deform_attn_backward', backward_fake
        )
    except RuntimeError as e:  # registered by another copy of this file
        if 'already' not in str(e):
            raise
    torch.ops.mmvfm.ms_deform_attn_forward._mmvfm_fake = True


def ext_available() -> bool:
    """Whether the compiled ops are loaded: ``mmvfm._ext`` (setup.py
    build), or an earlier :func:`load_ext_jit`."""
    if not _ops_registered():
        try:
            import mmvfm._ext  # noqa: F401
        except ImportError:
            return False
    if _ops_registered():
        _register_fake()
        if not _kernel_devices:  # once; not queried while tracing
            _kernel_devices.update(
                d
                for d in _KERNEL_DTYPES
                if torch._C._dispatch_has_kernel_for_dispatch_key(
                    'mmvfm::ms_deform_attn_forward', d.upper()
                )
            )
        return True
    return False


def load_ext_jit(
    with_cuda: Optional[bool] = None,
    build_directory: Optional[str] = None,
    verbose: bool = False,
) -> None:
    """Compile and load the ops from ``csrc/`` with
    ``torch.utils.cpp_extension.load`` (C++ compiler needed; nvcc too
    with ``with_cuda``, default: when CUDA is available)."""
    from torch.utils.cpp_extension import load

    if with_cuda is None:
        with_cuda = torch.cuda.is_available()
    sources = [
        osp.join(CSRC, 'pytorch', 'ms_deform_attn.cpp'),
        osp.join(CSRC, 'cpu', 'ms_deform_attn_cpu.cpp'),
    ]
    if with_cuda:
        sources.append(osp.join(CSRC, 'cuda', 'ms_deform_attn_cuda.cu'))
    if build_directory is not None:
        os.makedirs(build_directory, exist_ok=True)
    load(
        'mmvfm_ext_jit' + ('_cuda' if with_cuda else ''),
        sources,
        extra_cflags=['-O3', '-fopenmp'],
        extra_ldflags=['-fopenmp'],
        extra_cuda_cflags=['-O3'],
        build_directory=build_directory,
        verbose=verbose,
    )
    _kernel_devices.clear()  # a CUDA build adds a device
    ext_available()


class MSDeformAttnFunction(Function):
    """The compiled kernel with its compiled backward.

    Inputs as :func:`ms_deform_attn`; ``value``, ``sampling_locations`` and
    ``attention_weights`` of one dtype the kernel supports on their device.
    """

    @staticmethod
    def forward(
        ctx,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        sampling_locations: Tensor,
        attention_weights: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
        )
        return torch.ops.mmvfm.ms_deform_attn_forward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        grad_value, grad_loc, grad_attn = (
            torch.ops.mmvfm.ms_deform_attn_backward(
                *ctx.saved_tensors, grad_output.contiguous()
            )
        )
        return grad_value, None, None, grad_loc, grad_attn


def _as_index(
    spatial_shapes, level_start_index, device: torch.device
) -> Sequence[Tensor]:
    shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=device)
    if level_start_index is None:
        areas = shapes.prod(1)
        level_start_index = torch.cat(
            (areas.new_zeros(1), areas.cumsum(0)[:-1])
        )
    starts = torch.as_tensor(
        level_start_index, dtype=torch.long, device=device
    )
    return shapes, starts


def kernel_supports(value: Tensor) -> bool:
    """Whether the compiled kernel runs for ``value``'s device (its dtype
    is cast where needed): the ops are loaded and have a kernel for that
    device (a CPU-only build has none for CUDA)."""
    return ext_available() and value.device.type in _kernel_devices


def ms_deform_attn(
    value: Tensor,
    spatial_shapes,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    level_start_index: Optional[Tensor] = None,
) -> Tensor:
    """Multi-scale deformable attention (module doc): the compiled kernel
    where built for the device, else :func:`ms_deform_attn_pytorch` with
    one warning per process.

    Args:
        value (Tensor): (B, K, H, C).
        spatial_shapes (Tensor): (L, 2) int ``(h_l, w_l)``.
        sampling_locations (Tensor): (B, Q, H, L, P, 2).
        attention_weights (Tensor): (B, Q, H, L, P).
        level_start_index (Tensor, optional): (L,); derived from
            ``spatial_shapes`` when None.

    Returns:
        Tensor: (B, Q, H * C), of ``value``'s dtype.
    """
    global _warned
    if not kernel_supports(value):
        if not _warned:
            _warned = True
            warnings.warn(
                'mmvfm: the compiled multi-scale deformable attention is '
                f'not built for {value.device.type}; using the PyTorch '
                'reference (slow). Build it with `MMVFM_WITH_OPS=1 pip '
                'install -e .` or `bash tools/install.sh`.',
                stacklevel=2,
            )
        return ms_deform_attn_pytorch(
            value, spatial_shapes, sampling_locations, attention_weights
        )
    shapes, starts = _as_index(spatial_shapes, level_start_index, value.device)
    dtype = value.dtype
    compute = dtype
    if dtype not in _KERNEL_DTYPES[value.device.type]:
        compute = torch.float32  # e.g. bfloat16 under CPU autocast
    out = MSDeformAttnFunction.apply(
        value.to(compute),
        shapes,
        starts,
        sampling_locations.to(compute),
        attention_weights.to(compute),
    )
    return out.to(dtype)
