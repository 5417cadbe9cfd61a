# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD's full-map reductions: two chunked autograd ops, their pure-PyTorch
references, and the dispatch between them.

Every reduction of a full feature map that FGD (Focal and Global
Distillation, Yang et al., CVPR 2022; :class:`mmvfm.models.losses.FGDLoss`)
needs is done by one of two ops, on flat maps ``x`` (N, C, L) with
``L = H * W``:

- :func:`fgd_map_stats`, from a map ``x`` and a ``conv_mask`` weight ``w``
  (C,): ``sum_c |x|`` (N, L), ``sum_l |x|`` (N, C) (the inputs of the
  spatial and channel attention) and the GcBlock context logits
  ``sum_c w * x`` (N, L);
- :func:`fgd_pair_stats`, from the student and teacher maps ``fs``, ``ft``
  (N, C, L), the teacher's channel attention ``c`` (N, C) and the context
  weights ``p_s``, ``p_t`` (N, L), with ``diff = fs - ft``:
  ``P = sum_c c * diff^2`` (N, L), ``r1 = sum_l diff`` and
  ``r2 = sum_l diff^2`` (N, C), ``ctx_s = sum_l fs * p_s`` and
  ``ctx_t = sum_l ft * p_t`` (N, C).

Implementations:

- :class:`FGDMapStatsFunction` and :class:`FGDPairStatsFunction` (the
  default, ``impl='chunked'``): one pass over the channels, ``step`` at a
  time, so that every temporary is a small, cache-sized chunk and no
  full-size tensor but the inputs (and, in backward, the one gradient
  tensor per map, written chunk by chunk) is made. ``diff`` is never
  stored: backward recomputes it chunk by chunk. Backward is
  ``once_differentiable``.
- :func:`fgd_map_stats_pytorch` and :func:`fgd_pair_stats_pytorch`
  (``impl='pytorch'``): the same sums written plainly, autograd by
  PyTorch; the references of the tests. They differ from the chunked ops
  by the summation order only (rounding).

Both run on any device and floating dtype; the inputs of one call share a
dtype and device (the caller casts: :class:`FGDLoss` computes half inputs
in float32 with autocast off).

This file imports nothing but torch (layering: ops import no models).
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import once_differentiable

__all__ = [
    'FGDMapStatsFunction',
    'FGDPairStatsFunction',
    'fgd_map_stats',
    'fgd_map_stats_pytorch',
    'fgd_pair_stats',
    'fgd_pair_stats_pytorch',
]

IMPLS = ('chunked', 'pytorch')
# by default the chunked ops take channels in chunks of about this many
# elements (N * L per channel)
CHUNK_ELEMS = 1 << 19


def _rowdot(x: Tensor, v: Tensor) -> Tensor:
    """``sum_l x[n, c, l] * v[n, l]``: x (N, C, L), v (N, L) -> (N, C).

    One matrix-vector product per image: much faster on CPU than ``bmm``
    with a (N, L, 1) operand.
    """
    return torch.stack([torch.mv(x[n], v[n]) for n in range(x.shape[0])])


def _chunks(C: int, step: int) -> List[slice]:
    """Channel slices of at most ``step`` channels covering ``range(C)``."""
    return [slice(c0, min(c0 + step, C)) for c0 in range(0, C, step)]


def _default_step(x: Tensor) -> int:
    """Channels per chunk: about :data:`CHUNK_ELEMS` elements."""
    N, _, L = x.shape
    return max(1, CHUNK_ELEMS // max(1, N * L))


# ---------------------------------------------------------------------------
# map stats: sum_c |x|, sum_l |x|, sum_c w * x
# ---------------------------------------------------------------------------
def fgd_map_stats_pytorch(x: Tensor, weight: Tensor) -> Tuple[Tensor, ...]:
    """The reference of :func:`fgd_map_stats` (plain autograd).

    Args:
        x (Tensor): A flat map, (N, C, L).
        weight (Tensor): The ``conv_mask`` weight, (C,).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``sum_c |x|`` (N, L), ``sum_l |x|``
        (N, C) and the context logits ``sum_c weight * x`` (N, L).
    """
    a = x.abs()
    # [C] x [N, C, L] -> [N, L]
    logit = torch.matmul(weight, x)
    return a.sum(dim=1), a.sum(dim=2), logit


class FGDMapStatsFunction(Function):
    """:func:`fgd_map_stats` in one chunked pass.

    Forward takes the absolute values ``step`` channels at a time, so that
    every temporary is a small, cache-sized chunk; no full-size tensor is
    made. Backward writes the gradient of x,
    ``sign(x) * (g_c[n, l] + g_l[n, c]) + w[c] * g_w[n, l]``, straight
    into one new tensor, chunk by chunk.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, step: int):
        N, C, L = x.shape
        sum_c = x.new_zeros(N, L)
        sum_l = x.new_empty(N, C)
        for sl in _chunks(C, step):
            a = x[:, sl].abs()
            sum_c += a.sum(dim=1)
            sum_l[:, sl] = a.sum(dim=2)
        # [N, 1, C] x [N, C, L] -> [N, 1, L] -> [N, L]
        logit = torch.bmm(w.view(1, 1, C).expand(N, 1, C), x).squeeze(1)
        ctx.save_for_backward(x, w)
        ctx.step = step
        return sum_c, sum_l, logit

    @staticmethod
    @once_differentiable
    def backward(ctx, g_c, g_l, g_w):
        x, w = ctx.saved_tensors
        g_x = g_wt = None
        if ctx.needs_input_grad[0]:
            g_x = torch.empty_like(x)
            for sl in _chunks(x.shape[1], ctx.step):
                sgn = x[:, sl].sign()
                g_k = g_x[:, sl]
                torch.mul(sgn, g_c[:, None, :], out=g_k)
                g_k.addcmul_(sgn, g_l[:, sl, None])
                g_k.addcmul_(w[None, sl, None], g_w[:, None, :])
        if ctx.needs_input_grad[1]:
            g_wt = _rowdot(x, g_w).sum(dim=0)
        return g_x, g_wt, None


def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')


def fgd_map_stats(
    x: Tensor,
    weight: Tensor,
    step: Optional[int] = None,
    impl: str = 'chunked',
) -> Tuple[Tensor, ...]:
    """``sum_c |x|``, ``sum_l |x|`` and the context logits of one map.

    Args:
        x (Tensor): A flat map, (N, C, L).
        weight (Tensor): The ``conv_mask`` weight, (C,), of ``x``'s dtype
            and device.
        step (int, optional): Channels per chunk (``impl='chunked'``);
            about :data:`CHUNK_ELEMS` elements when None.
        impl (str): ``'chunked'`` (:class:`FGDMapStatsFunction`, default)
            or ``'pytorch'`` (:func:`fgd_map_stats_pytorch`).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``sum_c |x|`` (N, L), ``sum_l |x|``
        (N, C) and ``sum_c weight * x`` (N, L).
    """
    _check_impl(impl)
    if x.dim() != 3 or tuple(weight.shape) != (x.shape[1],):
        raise ValueError(
            f'x must be (N, C, L) and weight (C,), got x {tuple(x.shape)} '
            f'and weight {tuple(weight.shape)}'
        )
    if impl == 'pytorch':
        return fgd_map_stats_pytorch(x, weight)
    if step is None:
        step = _default_step(x)
    return FGDMapStatsFunction.apply(x, weight, step)


# ---------------------------------------------------------------------------
# pair stats: P, sum_l diff, sum_l diff^2 and the two GcBlock contexts
# ---------------------------------------------------------------------------
def fgd_pair_stats_pytorch(
    fs: Tensor, ft: Tensor, c: Tensor, p_s: Tensor, p_t: Tensor
) -> Tuple[Tensor, ...]:
    """The reference of :func:`fgd_pair_stats` (plain autograd).

    Args:
        fs (Tensor): Student map, (N, C, L).
        ft (Tensor): Teacher map, (N, C, L).
        c (Tensor): Teacher channel attention, (N, C).
        p_s (Tensor): Student context weights, (N, L).
        p_t (Tensor): Teacher context weights, (N, L).

    Returns:
        tuple[Tensor, ...]: ``P`` (N, L), ``r1``, ``r2``, ``ctx_s`` and
        ``ctx_t`` (N, C); see the module docstring.
    """
    d = fs - ft
    d2 = d.square()
    P = (c[:, :, None] * d2).sum(dim=1)
    ctx_s = (fs * p_s[:, None, :]).sum(dim=2)
    ctx_t = (ft * p_t[:, None, :]).sum(dim=2)
    return P, d.sum(dim=2), d2.sum(dim=2), ctx_s, ctx_t


class FGDPairStatsFunction(Function):
    """:func:`fgd_pair_stats` in one chunked pass.

    Only fs and ft (and the small inputs) are saved; ``diff`` is
    recomputed chunk by chunk in backward, where the gradient of fs,
    ``2 * diff * (c[n, c] * g_P[n, l] + g_r2[n, c]) + g_r1[n, c] +
    g_cs[n, c] * p_s[n, l]``, is written into one new tensor (and that of
    ft likewise).
    """

    @staticmethod
    def forward(ctx, fs, ft, c, p_s, p_t, step: int):
        N, C, L = fs.shape
        P = fs.new_zeros(N, L)
        r1, r2 = fs.new_empty(N, C), fs.new_empty(N, C)
        for sl in _chunks(C, step):
            d = fs[:, sl] - ft[:, sl]
            r1[:, sl] = d.sum(dim=2)
            d.square_()
            r2[:, sl] = d.sum(dim=2)
            # [N, 1, c] x [N, c, L] -> [N, L]
            P += torch.bmm(c[:, None, sl], d).squeeze(1)
        ctx_s = _rowdot(fs, p_s)
        ctx_t = _rowdot(ft, p_t)
        ctx.save_for_backward(fs, ft, c, p_s, p_t)
        ctx.step = step
        return P, r1, r2, ctx_s, ctx_t

    @staticmethod
    @once_differentiable
    def backward(ctx, g_P, g_r1, g_r2, g_cs, g_ct):
        fs, ft, c, p_s, p_t = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_fs = torch.empty_like(fs) if need[0] else None
        g_ft = torch.empty_like(ft) if need[1] else None
        g_c = torch.empty_like(c) if need[2] else None
        if need[0] or need[1] or need[2]:
            c2, g_r2_2 = 2 * c, 2 * g_r2
            for sl in _chunks(fs.shape[1], ctx.step):
                d = fs[:, sl] - ft[:, sl]
                if need[0] or need[1]:
                    # grad of diff: 2 * diff * (c * g_P + g_r2) + g_r1
                    g_d = torch.baddbmm(
                        g_r2_2[:, sl, None], c2[:, sl, None], g_P[:, None, :]
                    )
                    g_d.mul_(d).add_(g_r1[:, sl, None])
                    if need[0]:
                        torch.addcmul(
                            g_d,
                            g_cs[:, sl, None],
                            p_s[:, None, :],
                            out=g_fs[:, sl],
                        )
                    if need[1]:
                        g_tk = g_ft[:, sl]
                        torch.addcmul(
                            g_d,
                            g_ct[:, sl, None],
                            p_t[:, None, :],
                            value=-1,
                            out=g_tk,
                        )
                        g_tk.neg_()
                if need[2]:
                    d.square_()
                    g_c[:, sl] = _rowdot(d, g_P)
        g_ps = torch.bmm(g_cs.unsqueeze(1), fs).squeeze(1) if need[3] else None
        g_pt = torch.bmm(g_ct.unsqueeze(1), ft).squeeze(1) if need[4] else None
        return g_fs, g_ft, g_c, g_ps, g_pt, None


def fgd_pair_stats(
    fs: Tensor,
    ft: Tensor,
    c: Tensor,
    p_s: Tensor,
    p_t: Tensor,
    step: Optional[int] = None,
    impl: str = 'chunked',
) -> Tuple[Tensor, ...]:
    """The reductions of ``diff = fs - ft`` and the two GcBlock contexts.

    Args:
        fs (Tensor): Student map, (N, C, L).
        ft (Tensor): Teacher map, (N, C, L).
        c (Tensor): Teacher channel attention, (N, C).
        p_s (Tensor): Student context weights (softmax over L), (N, L).
        p_t (Tensor): Teacher context weights, (N, L).
        step (int, optional): Channels per chunk (``impl='chunked'``);
            about :data:`CHUNK_ELEMS` elements when None.
        impl (str): ``'chunked'`` (:class:`FGDPairStatsFunction`, default)
            or ``'pytorch'`` (:func:`fgd_pair_stats_pytorch`).

    Returns:
        tuple[Tensor, ...]: ``P = sum_c c * diff^2`` (N, L),
        ``r1 = sum_l diff``, ``r2 = sum_l diff^2``,
        ``ctx_s = sum_l fs * p_s`` and ``ctx_t = sum_l ft * p_t`` (N, C).
    """
    _check_impl(impl)
    if fs.dim() != 3 or fs.shape != ft.shape:
        raise ValueError(
            f'fs and ft must be (N, C, L) of one shape, got fs '
            f'{tuple(fs.shape)} and ft {tuple(ft.shape)}'
        )
    N, C, L = fs.shape
    for arg, t, shape in (
        ('c', c, (N, C)),
        ('p_s', p_s, (N, L)),
        ('p_t', p_t, (N, L)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(
                f'{arg} must be {shape} for maps {tuple(fs.shape)}, got '
                f'{tuple(t.shape)}'
            )
    if impl == 'pytorch':
        return fgd_pair_stats_pytorch(fs, ft, c, p_s, p_t)
    if step is None:
        step = _default_step(fs)
    return FGDPairStatsFunction.apply(fs, ft, c, p_s, p_t, step)
