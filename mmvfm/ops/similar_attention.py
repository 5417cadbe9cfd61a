# Copyright (c) mmvfm contributors. All rights reserved.
"""Dense multi-scale cross-attention with SiA (similar attention) fusion.

SiA (arXiv 2108.09691) guides the attention map of a fine feature level by
the (upsampled) attention map of the next coarser level. No public code
exists; this file is the reference. It imports nothing but torch, so that
it can be loaded by path (``importlib``) on a machine without mmcv/mmdet.

Inputs (one batch of ``B`` images, ``H`` heads, ``Nq`` queries):

- ``query`` (B, Nq, H, Dh), *not* pre-scaled; the logits are
  ``scale * <q, k>`` with ``scale = Dh ** -0.5`` unless given;
- ``keys[l]`` (B, H, h_l, w_l, Dh) and ``values[l]`` (B, H, h_l, w_l, Dv)
  for the ``L`` levels, **coarse to fine**, each exactly twice the
  previous one: ``h_l = 2 h_{l-1}``, ``w_l = 2 w_{l-1}`` (checked for
  every mode, so that the plain baseline runs on the very same inputs);
- ``fusion_weights`` (L - 1, H): ``fusion_weights[l - 1, h] = w_{l,h}``
  fuses level ``l`` with level ``l - 1`` in head ``h``; level 0 has no
  weight (nothing coarser to fuse with). Ignored when ``mode`` is None;
- ``key_padding_masks`` (optional) L bool tensors (B, h_l, w_l), True at
  padded positions (mmdet's convention), or None (nothing padded).

Output (B, Nq, H, Dv) ``= sum_l A_l V_l``, with a softmax over the
positions of each level separately (every ``A_l`` is a distribution over
level ``l``) and the per-level outputs summed. With
``S_l = softmax(logits_l)`` and ``U`` the nearest 2x upsampling that
splits each coarse cell's mass equally over its four children
(``U(A)[child] = A[parent] / 4``, so ``U(A)`` is again a distribution),
the modes are, for ``l >= 1`` (``A_0 = S_0`` always):

- ``mode=None`` (plain multi-scale attention): ``A_l = S_l``;
- ``mode='prob'`` (probability mixing, the default):
  ``A_l = (1 - w_l) S_l + w_l U(A_{l-1})``; a convex mixture of two
  distributions, so ``A_l`` stays one for ``w_l`` in [0, 1];
- ``mode='logit'`` (logit guidance):
  ``A_l = softmax(logits_l + w_l log U(A_{l-1}))``, i.e.
  ``A_l ∝ S_l * U(A_{l-1}) ** w_l``: the coarse map is a prior that
  multiplies the fine likelihood (``w_l = 1``: product of experts).

``A_{l-1}`` is the *fused* map of the coarser level, so the guidance
cascades from the coarsest level down. In both modes ``w = 0`` is exactly
plain attention.

Why ``'prob'`` is the default (the paper leaves it open):

- every ``A_l`` is a distribution by construction, and ``w`` has a plain
  meaning: the share of attention mass that level ``l`` inherits from
  level ``l - 1``; ``w = 1`` is the coarse map itself;
- it needs no log of a probability (no epsilon, no ``-inf * 0``): the
  gradient w.r.t. ``w`` is ``U(A_{l-1}) - S_l``, bounded;
- early in training the fine logits are nearly flat and the guidance
  still moves mass where the coarse level looks, which is what SiA
  is for ("high-resolution attention is slow to learn");
- it is linear in ``A_{l-1}``, which makes it as cheap as plain
  attention (next paragraph). Logit guidance is not linear and needs the
  explicit maps.

Value folding (the ``'sdpa'`` implementation, used for ``None`` and
``'prob'``): ``U`` has the adjoint ``P``, the 2x2 average pooling
(``<U(X), G> = <X, P(G)>``), so unrolling the recursion gives

    ``out = sum_l (1 - w_l) <S_l, G_l>``, with ``G_{L-1} = V_{L-1}``,
    ``G_l = V_l + w_{l+1} P(G_{l+1})`` (``w_0 := 0``),

a *plain* multi-scale attention over the same keys with folded values
``G_l`` and a per-head gain ``1 - w_l``. It never forms ``U(A)`` nor any
map larger than plain attention does, and runs on
``torch.nn.functional.scaled_dot_product_attention``, i.e. on any fused
(flash / memory-efficient) attention kernel. ``'prob'`` SiA therefore
needs no custom kernel at all; the maps themselves (``return_attn``) use
the explicit reference, which materialises (B, H, Nq, h_l * w_l) per
level.

Key folding (``'sdpa'`` for ``'logit'``): the fused logits cascade
linearly, ``Z_l = s <q, K_l> + w_l log U(A_{l-1})`` with
``log U(A_{l-1})[child] = Z_{l-1}[parent] - LSE(Z_{l-1}) - log c(parent)``;
the log-sum-exp and, without padding, ``log c = log 4`` are per-query
constants that each level's softmax drops. So ``Z_l = s <q, K'_l> + b_l``
up to such constants, with

    ``K'_0 = K_0``, ``K'_l = K_l + w_l Up(K'_{l-1})`` (nearest replication),
    ``b_0 = 0``, ``b_l = w_l (Up(b_{l-1}) - log c(parent))`` (padding only),

a plain attention per level over the folded keys ``K'_l`` and the original
values, the padding's cascaded bias ``b_l`` passed to SDPA as a float mask
(``-inf`` at padded keys).

Padding masks. Padded keys get ``-inf`` logits. The upsampling only
hands mass to valid children: ``U(A)[child] = A[parent] / c(parent)`` for
a valid child, 0 for a padded one, with ``c`` the number of valid
children (its adjoint ``P`` is the mean over the valid children). So
``A_l`` stays a distribution over the valid positions of level ``l``
without renormalising, provided the masks are *consistent*: a coarse
cell is padded iff all four of its children are. Masks made from one
image mask with DETR's nearest-downsampling rule (row ``i`` of a level of
stride ``s`` is valid iff ``i * s < img_h``, i.e. ``ceil(img_h / s)``
valid rows) are consistent; in a fused mode inconsistent masks raise
ValueError (mass would be lost, or a valid cell would get a zero prior
and ``log 0`` in logit mode). In logit mode the ``- log c`` term of
``log U(A)`` is kept: it is a constant (``- log 4``) without padding and
cancels in the softmax, but at a border cell with fewer valid children it
is the prior's real value.

Not supported, by design: dropout on the attention probabilities (the
op is deterministic; put dropout after the output projection) and
attention masks other than key padding.

How a CUDA kernel will plug in (none exists yet): following the mmcv
pattern, a ``torch.autograd.Function`` wrapping the compiled forward and
backward, chosen by :func:`similar_attention` only for CUDA tensors when
the extension imports (lazily, so that the error appears only when the op
is used) and when the maps are asked for (``return_attn``; every mode
already runs on fused attention kernels by value or key folding). Its
tests compare it with :func:`similar_attention_pytorch` (the oracle),
float64 tight and float32 loose.
"""

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = (None, 'prob', 'logit')
IMPLS = ('auto', 'pytorch', 'sdpa')

__all__ = [
    'MODES',
    'IMPLS',
    'similar_attention',
    'similar_attention_pytorch',
    'similar_attention_sdpa',
    'upsample_prior',
]


def _check_inputs(
    query: Tensor,
    keys: Sequence[Tensor],
    values: Sequence[Tensor],
    fusion_weights: Optional[Tensor],
    mode: Optional[str],
    key_padding_masks: Optional[Sequence[Tensor]],
) -> None:
    """Raise ValueError naming the first argument or level that is off."""
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if query.dim() != 4:
        raise ValueError(
            f'query must be (B, Nq, H, Dh), got shape {tuple(query.shape)}'
        )
    B, _, H, D = query.shape
    L = len(keys)
    if L == 0 or len(values) != L:
        raise ValueError(
            f'keys and values must hold the same number (>= 1) of levels, '
            f'got {L} and {len(values)}'
        )
    dv = values[0].shape[-1] if values[0].dim() == 5 else None
    for lvl, (k, v) in enumerate(zip(keys, values)):
        if k.dim() != 5 or k.shape[:2] != (B, H) or k.shape[-1] != D:
            raise ValueError(
                f'level {lvl}: keys must be (B, H, h, w, Dh) = '
                f'({B}, {H}, h, w, {D}), got {tuple(k.shape)}'
            )
        if v.dim() != 5 or v.shape[:4] != k.shape[:4] or v.shape[-1] != dv:
            raise ValueError(
                f'level {lvl}: values must be (B, H, h, w, Dv) with the '
                f"keys' (B, H, h, w) = {tuple(k.shape[:4])} and the Dv of "
                f'level 0, got {tuple(v.shape)}'
            )
        if lvl > 0:
            ph, pw = keys[lvl - 1].shape[2:4]
            if tuple(k.shape[2:4]) != (2 * ph, 2 * pw):
                hint = ''
                if (2 * k.shape[2], 2 * k.shape[3]) == (ph, pw):
                    hint = ' (the levels look fine to coarse: reverse them)'
                raise ValueError(
                    f'level {lvl}: expected {2 * ph}x{2 * pw}, twice level '
                    f'{lvl - 1} ({ph}x{pw}; levels go coarse to fine, each '
                    f'twice the previous), got {k.shape[2]}x{k.shape[3]}'
                    f'{hint}'
                )
    if mode is not None:
        if fusion_weights is None:
            fusion_weights = query.new_zeros(L - 1, H)
        if tuple(fusion_weights.shape) != (L - 1, H):
            raise ValueError(
                f'fusion_weights must be (L - 1, H) = ({L - 1}, {H}), got '
                f'{tuple(fusion_weights.shape)}'
            )
    if key_padding_masks is not None:
        if len(key_padding_masks) != L:
            raise ValueError(
                f'key_padding_masks must hold one mask per level ({L}), '
                f'got {len(key_padding_masks)}'
            )
        for lvl, (m, k) in enumerate(zip(key_padding_masks, keys)):
            if m.dtype != torch.bool or tuple(m.shape) != (
                B,
                *k.shape[2:4],
            ):
                raise ValueError(
                    f'level {lvl}: key padding mask must be bool (B, h, w) '
                    f'= ({B}, {k.shape[2]}, {k.shape[3]}), got '
                    f'{m.dtype} {tuple(m.shape)}'
                )


def _rep2x2(x: Tensor) -> Tensor:
    """Nearest 2x upsampling (..., h, w, D) -> (..., 2h, 2w, D)."""
    *lead, h, w, D = x.shape
    x = x[..., :, None, :, None, :].expand(*lead, h, 2, w, 2, D)
    return x.reshape(*lead, 2 * h, 2 * w, D)


def _sum2x2(x: Tensor) -> Tensor:
    """2x2 sum pooling (..., 2h, 2w, D) -> (..., h, w, D), the adjoint of
    :func:`_rep2x2`. Rows then columns by adding halves: a strided
    ``sum`` over the two pair dims of a view is ~30x slower on CPU."""
    *lead, h2, w2, D = x.shape
    rows = x.reshape(*lead, h2 // 2, 2, w2, D)
    rows = rows[..., 0, :, :] + rows[..., 1, :, :]  # [..., h, 2w, D]
    cols = rows.view(*lead, h2 // 2, w2 // 2, 2, D)
    return cols[..., 0, :] + cols[..., 1, :]  # [..., h, w, D]


class _Up2(torch.autograd.Function):
    """:func:`_rep2x2` with :func:`_sum2x2` as its backward (autograd's
    backward of ``expand`` is the slow strided sum)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return _rep2x2(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _sum2x2(grad)


class _SumPool2(torch.autograd.Function):
    """:func:`_sum2x2` with :func:`_rep2x2` as its backward (autograd's
    backward of slicing would zero-fill and copy the full-size gradient
    once per slice)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return _sum2x2(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _rep2x2(grad)


def _up2(x: Tensor) -> Tensor:
    """Nearest 2x upsampling of the last two dims: (..., h, w) ->
    (..., 2h, 2w); no mass scaling."""
    return _Up2.apply(x.unsqueeze(-1)).squeeze(-1)


def _child_counts(
    fine_mask: Tensor, coarse_mask: Tensor, level: int
) -> Tensor:
    """Number of valid children (B, h, w) of each cell of the coarser
    level, from the finer level's padding mask (B, 2h, 2w); ValueError if
    the two masks are inconsistent (a coarse cell must be padded iff all
    its children are)."""
    B, h2, w2 = fine_mask.shape
    valid = (~fine_mask).view(B, h2 // 2, 2, w2 // 2, 2)
    counts = valid.sum(dim=(2, 4))
    if bool(((counts == 0) != coarse_mask).any()):
        raise ValueError(
            f'level {level}: key padding masks are inconsistent with level '
            f'{level - 1}: a cell must be padded iff all four of its '
            f"children are (build each level's mask with ceil(img / "
            f'stride) valid rows and columns)'
        )
    return counts


def upsample_prior(
    attn: Tensor, fine_mask: Optional[Tensor] = None, counts=None
) -> Tensor:
    """``U(A)``: a coarse map (..., h, w) spread over the finer level
    (..., 2h, 2w), each cell's mass split equally over its valid children.

    Args:
        attn: (B, H, Nq, h, w) distributions over the coarse level.
        fine_mask: (B, 2h, 2w) True at padded positions, or None.
        counts: (B, h, w) valid children per coarse cell (computed from
            ``fine_mask`` when None).

    Returns:
        Tensor: (B, H, Nq, 2h, 2w), a distribution over the valid cells of
        the finer level when ``attn`` is one and the masks are consistent.
    """
    if fine_mask is None:
        return _up2(attn / 4)
    if counts is None:
        B, h2, w2 = fine_mask.shape
        counts = (~fine_mask).view(B, h2 // 2, 2, w2 // 2, 2).sum((2, 4))
    per_child = attn / counts.clamp_min(1)[:, None, None].to(attn.dtype)
    return _up2(per_child).masked_fill(fine_mask[:, None, None], 0)


def similar_attention_pytorch(
    query: Tensor,
    keys: Sequence[Tensor],
    values: Sequence[Tensor],
    fusion_weights: Optional[Tensor] = None,
    mode: Optional[str] = 'prob',
    key_padding_masks: Optional[Sequence[Tensor]] = None,
    scale: Optional[float] = None,
    return_attn: bool = False,
) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
    """The explicit reference: forms every attention map (the oracle).

    Args and shapes as in the module docstring. Memory: one
    (B, H, Nq, h_l * w_l) map per level and mode step is kept for
    backward (about three at the finest level in the fused modes).

    Returns:
        Tensor (B, Nq, H, Dv), and with ``return_attn`` also the list of
        the fused maps ``A_l`` (B, H, Nq, h_l, w_l).
    """
    _check_inputs(query, keys, values, fusion_weights, mode, key_padding_masks)
    B, Nq, H, D = query.shape
    scale = D**-0.5 if scale is None else scale
    if mode is not None and fusion_weights is None:
        fusion_weights = query.new_zeros(len(keys) - 1, H)
    q = query.transpose(1, 2) * scale  # [B, Nq, H, Dh] -> [B, H, Nq, Dh]
    out = None
    maps: List[Tensor] = []
    prev = None  # fused map of the coarser level (log of it in logit mode)
    for lvl, (k, v) in enumerate(zip(keys, values)):
        h, w = k.shape[2:4]
        # [B, H, Nq, Dh] x [B, H, h*w, Dh] -> [B, H, Nq, h*w]
        logits = q @ k.flatten(2, 3).transpose(-1, -2)
        mask = counts = None
        if key_padding_masks is not None:
            mask = key_padding_masks[lvl]
            logits = logits.masked_fill(mask.view(B, 1, 1, h * w), -math.inf)
            if lvl > 0 and mode is not None:
                counts = _child_counts(mask, key_padding_masks[lvl - 1], lvl)
        if lvl == 0 or mode is None:
            log_attn = logits.log_softmax(-1) if mode == 'logit' else None
            attn = logits.softmax(-1)
        else:
            wl = fusion_weights[lvl - 1].to(logits.dtype).view(1, H, 1, 1)
            if mode == 'prob':
                prior = upsample_prior(prev, mask, counts).flatten(-2)
                attn = (1 - wl) * logits.softmax(-1) + wl * prior
            else:
                # log U(A)[child] = log A[parent] - log c(parent); 0 (not
                # -inf) at padded cells, whose logits are -inf anyway, so
                # that w = 0 gives no 0 * -inf
                log_prior = prev
                if counts is not None:
                    c = counts.clamp_min(1).to(prev.dtype)
                    log_prior = prev - c.log()[:, None, None]
                    pmask = key_padding_masks[lvl - 1][:, None, None]
                    log_prior = log_prior.masked_fill(pmask, 0)
                else:
                    log_prior = log_prior - math.log(4)
                log_prior = _up2(log_prior).flatten(-2)
                log_attn = (logits + wl * log_prior).log_softmax(-1)
                attn = log_attn.exp()
        # [B, H, Nq, h*w] x [B, H, h*w, Dv] -> [B, H, Nq, Dv]
        o = attn @ v.flatten(2, 3)
        out = o if out is None else out + o
        prev = (log_attn if mode == 'logit' else attn).view(B, H, Nq, h, w)
        if return_attn:
            maps.append(attn.view(B, H, Nq, h, w))
    out = out.transpose(1, 2)  # [B, H, Nq, Dv] -> [B, Nq, H, Dv]
    return (out, maps) if return_attn else out


def _fold(
    value: Tensor,
    finer: Tensor,
    weight: Tensor,
    fine_mask: Optional[Tensor],
    counts: Optional[Tensor],
) -> Tensor:
    """``G_{l-1} = V_{l-1} + w_l P(G_l)``: ``value`` (B, H, h, w, Dv),
    ``finer`` = G_l (B, H, 2h, 2w, Dv), ``weight`` = w_l (H,). ``P`` is
    the adjoint of :func:`upsample_prior`, the mean over each cell's valid
    children."""
    H = value.shape[1]
    if fine_mask is None:
        pooled = _SumPool2.apply(finer)
        return torch.addcmul(value, (weight / 4).view(1, H, 1, 1, 1), pooled)
    # valid child / c(parent): 0 at padded children, which get no mass
    share = (~fine_mask).to(finer.dtype) / _up2(counts.clamp_min(1))
    pooled = _SumPool2.apply(finer * share[:, None, :, :, None])
    return torch.addcmul(value, weight.view(1, H, 1, 1, 1), pooled)


def _logit_sdpa(
    query: Tensor,
    keys: Sequence[Tensor],
    values: Sequence[Tensor],
    fusion_weights: Optional[Tensor],
    masks: Optional[Sequence[Tensor]],
    scale: Optional[float],
) -> Tensor:
    """``'logit'`` SiA by key folding (module docstring), inputs checked."""
    B, Nq, H, D = query.shape
    if fusion_weights is None:
        fusion_weights = query.new_zeros(len(keys) - 1, H)
    fw = fusion_weights.to(keys[0].dtype)
    q = query.transpose(1, 2)  # [B, Nq, H, Dh] -> [B, H, Nq, Dh]
    out = folded = bias = None
    for lvl, (k, v) in enumerate(zip(keys, values)):
        h, w = k.shape[2:4]
        if lvl == 0:
            folded = k
        else:
            # K'_l = K_l + w_l Up(K'_{l-1}): [B, H, h, w, Dh]
            folded = k + fw[lvl - 1].view(1, H, 1, 1, 1) * _rep2x2(folded)
        attn_mask = None
        if masks is not None:
            if lvl > 0:
                # b_l = w_l (Up(b_{l-1}) - log c(parent)): [B, H, h, w]
                counts = _child_counts(masks[lvl], masks[lvl - 1], lvl)
                log_c = counts.clamp_min(1).to(k.dtype).log()[:, None]
                prev = 0 if bias is None else bias
                bias = fw[lvl - 1].view(1, H, 1, 1) * _up2(prev - log_c)
            pad = masks[lvl].view(B, 1, h, w)
            level_bias = k.new_zeros(B, 1, h, w) if bias is None else bias
            # SDPA's float mask is added to the logits: [B, H|1, 1, h*w]
            attn_mask = level_bias.masked_fill(pad, -math.inf)
            attn_mask = attn_mask.flatten(-2).unsqueeze(2)
        o = F.scaled_dot_product_attention(
            q, folded.flatten(2, 3), v.flatten(2, 3), attn_mask, scale=scale
        )  # [B, H, Nq, Dv]
        out = o if out is None else out + o
    return out.transpose(1, 2)  # [B, H, Nq, Dv] -> [B, Nq, H, Dv]


def similar_attention_sdpa(
    query: Tensor,
    keys: Sequence[Tensor],
    values: Sequence[Tensor],
    fusion_weights: Optional[Tensor] = None,
    mode: Optional[str] = 'prob',
    key_padding_masks: Optional[Sequence[Tensor]] = None,
    scale: Optional[float] = None,
) -> Tensor:
    """SiA on ``F.scaled_dot_product_attention`` (module docstring): plain
    and ``'prob'`` by value folding, ``'logit'`` by key folding; no map
    beyond what plain attention needs.

    Returns:
        Tensor: (B, Nq, H, Dv), equal to :func:`similar_attention_pytorch`.
    """
    _check_inputs(query, keys, values, fusion_weights, mode, key_padding_masks)
    if mode == 'logit':
        return _logit_sdpa(
            query, keys, values, fusion_weights, key_padding_masks, scale
        )
    B, Nq, H, D = query.shape
    L = len(keys)
    masks = key_padding_masks
    q = query.transpose(1, 2)  # [B, Nq, H, Dh] -> [B, H, Nq, Dh]
    folded = list(values)
    if mode is not None and L > 1:
        if fusion_weights is None:
            fusion_weights = query.new_zeros(L - 1, H)
        fw = fusion_weights.to(values[0].dtype)
        counts = [None] * L
        if masks is not None:
            counts[1:] = [
                _child_counts(masks[lvl], masks[lvl - 1], lvl)
                for lvl in range(1, L)
            ]
        # G_{L-1} = V_{L-1}; G_l = V_l + w_{l+1} P(G_{l+1}), fine to coarse
        for lvl in range(L - 1, 0, -1):
            mask = None if masks is None else masks[lvl]
            folded[lvl - 1] = _fold(
                values[lvl - 1], folded[lvl], fw[lvl - 1], mask, counts[lvl]
            )
    out = None
    for lvl, (k, g) in enumerate(zip(keys, folded)):
        h, w = k.shape[2:4]
        attn_mask = None
        if masks is not None:
            # SDPA's boolean mask is True where attention is allowed
            attn_mask = ~masks[lvl].view(B, 1, 1, h * w)
        o = F.scaled_dot_product_attention(
            q, k.flatten(2, 3), g.flatten(2, 3), attn_mask, scale=scale
        )  # [B, H, Nq, Dv]
        if mode is not None and lvl > 0:
            gain = 1 - fusion_weights[lvl - 1].to(o.dtype)
            o = o * gain.view(1, H, 1, 1)
        out = o if out is None else out + o
    return out.transpose(1, 2)  # [B, H, Nq, Dv] -> [B, Nq, H, Dv]


def similar_attention(
    query: Tensor,
    keys: Sequence[Tensor],
    values: Sequence[Tensor],
    fusion_weights: Optional[Tensor] = None,
    mode: Optional[str] = 'prob',
    key_padding_masks: Optional[Sequence[Tensor]] = None,
    scale: Optional[float] = None,
    return_attn: bool = False,
    impl: str = 'auto',
) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
    """Dense multi-scale attention with SiA fusion (module docstring).

    Args:
        query: (B, Nq, H, Dh).
        keys: L tensors (B, H, h_l, w_l, Dh), coarse to fine, each twice
            the previous level.
        values: L tensors (B, H, h_l, w_l, Dv).
        fusion_weights: (L - 1, H), ``w_{l,h}`` of levels 1..L-1; None
            means zeros. Ignored when ``mode`` is None.
        mode: None (plain), ``'prob'`` or ``'logit'``.
        key_padding_masks: L bool tensors (B, h_l, w_l), True = padded.
        scale: logit scale, ``Dh ** -0.5`` when None.
        return_attn: also return the fused maps (B, H, Nq, h_l, w_l).
        impl: ``'pytorch'`` (explicit maps), ``'sdpa'`` (value or key
            folding on fused attention) or ``'auto'``: ``'sdpa'`` unless
            ``return_attn``.

    Returns:
        Tensor (B, Nq, H, Dv), and the maps with ``return_attn``.
    """
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'auto':
        impl = 'pytorch' if return_attn else 'sdpa'
    if impl == 'sdpa':
        if return_attn:
            raise ValueError("return_attn needs impl='pytorch'")
        return similar_attention_sdpa(
            query, keys, values, fusion_weights, mode, key_padding_masks, scale
        )
    return similar_attention_pytorch(
        query,
        keys,
        values,
        fusion_weights,
        mode,
        key_padding_masks,
        scale,
        return_attn,
    )
