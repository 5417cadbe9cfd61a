# Copyright (c) mmvfm contributors. All rights reserved.
"""Dense multi-scale cross-attention with SiA fusion, as a module.

:class:`SiAMultiScaleAttention` wraps :func:`mmvfm.ops.similar_attention`
(see that module's docstring for the maths) with the usual projections:

- ``q = W_q (query + query_pos)``, ``k = W_k (key + key_pos)``,
  ``v = W_v value``, split into ``num_heads`` heads; ``key_pos`` carries
  the position *and* level embedding (the detector adds the level
  embedding, shared by all layers, as Deformable DETR does);
- keys and values are flattened over the levels (B, sum_l h_l w_l, C),
  coarse to fine, with ``spatial_shapes`` ((h_0, w_0), ...); each level
  must be twice the previous one;
- ``out = identity + Dropout(W_o attn)``: the residual is inside, as in
  mmcv's ``MultiheadAttention``, so the module drops into mmdet's DETR
  decoder layers.

``fusion`` chooses the map fusion: ``'prob'`` (default), ``'logit'`` or
None, which is plain dense multi-scale attention with the same
parameters otherwise; None vs ``'prob'`` is the SiA on/off comparison.

Fusion weights ``w`` (num_levels - 1, num_heads), one per fused level and
head, parameterised so that each mode's range holds:

- ``'prob'``: ``w = sigmoid(theta)`` in (0, 1) (``A_l`` stays a
  distribution); default init ``w = 0.5``: the fine level starts with as
  much mass from the coarse map as from its own logits, so the guidance
  acts from the first iteration, and the gradient w.r.t. ``theta`` is
  largest there;
- ``'logit'``: ``w = theta`` (any sign; negative values would push
  attention away from where the coarser level looks); default init
  ``w = 1``: ``A_l ∝ S_l * U(A_{l-1})``, the product of the two.

``fusion_learnable=False`` keeps ``w`` fixed at its init (a buffer), the
other reading of the paper.

``spatial_query=True`` (off by default; a departure taken from
Conditional DETR, not from the SiA paper) adds a decoupled spatial term
to the logits: per head, ``q = [W_q (query + query_pos), lambda * s]``
and ``k = [W_k (key + key_pos), key_pos]`` (concatenated, so the head
dimension doubles and the scale is ``(2 Dh) ** -0.5``), where ``s`` is
``query_sine_pos``, the sine encoding of the query's reference point in
the keys' own encoding, and ``lambda = spatial_proj(query)`` a
content-conditioned modulation initialised to 1. At init ``s . key_pos``
is a sum of cosines of the distance between the reference and each cell,
so every query starts with a local attention around its reference --
what dense attention lacks and deformable attention has by construction;
fusion then acts on these maps as on any other.

Dropout on the attention probabilities is not offered (see the op);
``dropout`` acts after the output projection.
"""

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from mmvfm.ops.similar_attention import IMPLS, MODES, similar_attention

SpatialShapes = Union[Tensor, Sequence[Sequence[int]]]


def spatial_shapes_list(
    spatial_shapes: SpatialShapes,
) -> List[Tuple[int, int]]:
    """((h, w), ...) as Python ints, from a (L, 2) tensor or a sequence."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


@MODELS.register_module()
class SiAMultiScaleAttention(BaseModule):
    """Dense multi-scale cross-attention with SiA attention-map fusion.

    Args:
        embed_dims: channels C of queries, keys and values.
        num_heads: heads; C must be divisible by it.
        num_levels: L, the feature levels attended (coarse to fine).
        fusion: ``'prob'``, ``'logit'`` or None (plain attention).
        fusion_init: initial ``w`` of every level and head; None gives 0.5
            for ``'prob'`` (must be in (0, 1)) and 1.0 for ``'logit'``.
        fusion_learnable: learn ``w`` (else a fixed buffer).
        spatial_query: add the decoupled spatial term (needs
            ``query_sine_pos`` and ``key_pos`` in ``forward``).
        spatial_init: the initial ``lambda`` (1, as Conditional DETR's
            identity start). The spatial logit of one head is a sum of 8
            cosines of the reference-to-cell distance scaled by
            ``(2 Dh) ** -0.5``: at ``lambda = 1`` it varies by ~1 over the
            image, so the prior is nearly flat; a larger init starts the
            attention local (measured in the SiA README).
        dropout: dropout after the output projection.
        batch_first: must be True (mmdet's DETR layers pass it).
        impl: the op's implementation (``'auto'``, ``'pytorch'``,
            ``'sdpa'``).
        init_cfg: mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int = 256,
        num_heads: int = 8,
        num_levels: int = 3,
        fusion: Optional[str] = 'prob',
        fusion_init: Optional[float] = None,
        fusion_learnable: bool = True,
        spatial_query: bool = False,
        spatial_init: float = 1.0,
        dropout: float = 0.0,
        batch_first: bool = True,
        impl: str = 'auto',
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if fusion not in MODES:
            raise ValueError(f'fusion must be one of {MODES}, got {fusion!r}')
        if impl not in IMPLS:
            raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
        if embed_dims % num_heads:
            raise ValueError(
                f'embed_dims ({embed_dims}) must be divisible by num_heads '
                f'({num_heads})'
            )
        if num_levels < 1:
            raise ValueError(f'num_levels must be >= 1, got {num_levels}')
        if not batch_first:
            raise ValueError('SiAMultiScaleAttention is batch first only')
        if fusion_init is None:
            fusion_init = 1.0 if fusion == 'logit' else 0.5
        if fusion == 'prob' and not 0 < fusion_init < 1:
            raise ValueError(
                f"fusion='prob' needs fusion_init in (0, 1), got {fusion_init}"
            )
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.fusion = fusion
        self.fusion_init = float(fusion_init)
        self.impl = impl
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(dropout)
        self.spatial_query = bool(spatial_query)
        self.spatial_init = float(spatial_init)
        if self.spatial_query:
            self.spatial_proj = nn.Linear(embed_dims, embed_dims)
            self.reset_spatial()
        if fusion is None:
            self.register_parameter('fusion_theta', None)
        else:
            theta = torch.full((num_levels - 1, num_heads), self._theta_init())
            if fusion_learnable:
                self.fusion_theta = nn.Parameter(theta)
            else:
                self.register_buffer('fusion_theta', theta)

    def _theta_init(self) -> float:
        w = self.fusion_init
        return math.log(w / (1 - w)) if self.fusion == 'prob' else w

    def reset_fusion(self) -> None:
        """Set ``w`` back to ``fusion_init`` (after a generic init of all
        2-D parameters, such as DETR's xavier, has overwritten it)."""
        if self.fusion_theta is not None:
            with torch.no_grad():
                self.fusion_theta.fill_(self._theta_init())

    def reset_spatial(self) -> None:
        """The spatial modulation ``lambda`` back to ``spatial_init``
        (weight 0, bias ``spatial_init``), e.g. after a generic xavier init
        of all 2-D parameters."""
        if self.spatial_query:
            with torch.no_grad():
                self.spatial_proj.weight.zero_()
                self.spatial_proj.bias.fill_(self.spatial_init)

    def init_weights(self) -> None:
        super().init_weights()
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.reset_fusion()
        self.reset_spatial()

    def fusion_weights(self) -> Optional[Tensor]:
        """``w`` (num_levels - 1, num_heads), or None without fusion."""
        if self.fusion_theta is None:
            return None
        if self.fusion == 'prob':
            return self.fusion_theta.sigmoid()
        return self.fusion_theta

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor] = None,
        value: Optional[Tensor] = None,
        identity: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        key_pos: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
        spatial_shapes: Optional[SpatialShapes] = None,
        return_attn: bool = False,
        query_sine_pos: Optional[Tensor] = None,
        **kwargs,
    ) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:
        """
        Args:
            query: (B, Nq, C).
            key: (B, sum_l h_l w_l, C), the levels flattened coarse to
                fine.
            value: like ``key``; ``key`` when None.
            identity: the residual, ``query`` when None.
            query_pos: (B, Nq, C) added to ``query`` for q, or None.
            key_pos: like ``key``, added to ``key`` for k, or None.
            attn_mask: must be None (only key padding is supported).
            key_padding_mask: (B, sum_l h_l w_l) bool, True at padded
                positions, or None.
            spatial_shapes: ((h_0, w_0), ...) or a (L, 2) tensor.
            return_attn: also return the fused maps
                (B, num_heads, Nq, h_l, w_l) per level.
            query_sine_pos: (B, Nq, C), the sine encoding of each query's
                reference point; used (and required) with
                ``spatial_query``, ignored otherwise.

        Returns:
            Tensor (B, Nq, C), and the maps with ``return_attn``.
        """
        if key is None or spatial_shapes is None:
            raise ValueError(
                'SiAMultiScaleAttention is a cross-attention: key and '
                'spatial_shapes are required'
            )
        if attn_mask is not None:
            raise ValueError(
                'SiAMultiScaleAttention supports key_padding_mask only, '
                'not attn_mask'
            )
        value = key if value is None else value
        identity = query if identity is None else identity
        shapes = spatial_shapes_list(spatial_shapes)
        if len(shapes) != self.num_levels:
            raise ValueError(
                f'expected {self.num_levels} levels, got spatial_shapes '
                f'{shapes}'
            )
        sizes = [h * w for h, w in shapes]
        if key.shape[1] != sum(sizes) or value.shape[1] != sum(sizes):
            raise ValueError(
                f'key/value hold {key.shape[1]}/{value.shape[1]} positions, '
                f'spatial_shapes {shapes} sum to {sum(sizes)}'
            )
        B, Nq, C = query.shape
        H, D = self.num_heads, C // self.num_heads
        if self.spatial_query and (query_sine_pos is None or key_pos is None):
            raise ValueError(
                'SiAMultiScaleAttention(spatial_query=True) needs '
                'query_sine_pos and key_pos'
            )
        content = query
        if query_pos is not None:
            query = query + query_pos
        key_content = key if key_pos is None else key + key_pos
        # [B, Nq, C] -> [B, Nq, H, Dh]
        q = self.q_proj(query).view(B, Nq, H, D)
        k_flat = self.k_proj(key_content)
        if self.spatial_query:
            # [B, Nq, H, 2 Dh] and [B, sum hw, H, 2 Dh]: content | spatial
            q_s = (self.spatial_proj(content) * query_sine_pos).view(
                B, Nq, H, D
            )
            q = torch.cat([q, q_s], -1)
            k_flat = torch.cat(
                [
                    k_flat.view(B, -1, H, D),
                    key_pos.reshape(B, -1, H, D).to(k_flat.dtype),
                ],
                -1,
            ).flatten(2)
        Dk = q.shape[-1]
        keys, values, masks = [], [], None
        # [B, sum hw, C] -> per level [B, h, w, H, Dk] -> [B, H, h, w, Dk]
        for k, (h, w) in zip(k_flat.split(sizes, 1), shapes):
            keys.append(k.view(B, h, w, H, Dk).permute(0, 3, 1, 2, 4))
        for v, (h, w) in zip(self.v_proj(value).split(sizes, 1), shapes):
            values.append(v.view(B, h, w, H, D).permute(0, 3, 1, 2, 4))
        if key_padding_mask is not None:
            masks = [
                m.reshape(B, h, w)
                for m, (h, w) in zip(
                    key_padding_mask.bool().split(sizes, 1), shapes
                )
            ]
        out = similar_attention(
            q,
            keys,
            values,
            self.fusion_weights(),
            mode=self.fusion,
            key_padding_masks=masks,
            return_attn=return_attn,
            impl=self.impl,
        )
        maps = None
        if return_attn:
            out, maps = out
        # [B, Nq, H, Dh] -> [B, Nq, C]
        out = identity + self.proj_drop(self.out_proj(out.reshape(B, Nq, C)))
        return (out, maps) if return_attn else out

    def extra_repr(self) -> str:
        return (
            f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
            f'num_levels={self.num_levels}, fusion={self.fusion!r}, '
            f'fusion_init={self.fusion_init}, impl={self.impl!r}, '
            f'spatial_query={self.spatial_query}'
        )
