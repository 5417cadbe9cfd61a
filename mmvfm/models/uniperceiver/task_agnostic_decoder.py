# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's task-agnostic decoder ``g``.

BERT-style: post-norm transformer layers (self-attention, then an FFN, each
followed by a residual and LayerNorm; GELU), randomly initialised. A
learned ``<SPE>`` token is prepended to every sequence; its output is the
sequence's representation (for classification, retrieval and every
candidate). Each token gets a type embedding of its modality (spe, image,
text), as BERT's segment embeddings; positions come with the tokens (the
image encoder's and the text encoder's own).

Optional attribute-level mixture of experts (off by default,
``moe=dict(num_experts=..., top_k=1)``): every layer's FFN becomes an
:class:`AttributeMoEFFN` routed by each token's ``modality`` and ``task``
(module doc there).

Attention masks: ``attn_mask`` (S, S) or (N, S, S) bool, True = not
attended, over the sequence *with* ``<SPE>`` first; ``key_padding_mask``
(N, S - 1) bool, True at padding of the input tokens.
"""

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .attribute_moe import AttributeMoEFFN

MODALITIES = ('spe', 'image', 'text')
SPE_TYPE, IMAGE_TYPE, TEXT_TYPE = range(len(MODALITIES))


class BertLayer(nn.Module):
    """One post-norm layer: ``x = LN(x + Attn(x))``, ``x = LN(x + FFN(x))``.

    Args:
        dims (int): token dims.
        num_heads (int): attention heads.
        ffn_dims (int): FFN hidden width.
        dropout (float): dropout on attention weights and sublayer outputs.
        moe (dict, optional): :class:`AttributeMoEFFN` arguments (beyond
            the dims) instead of the dense FFN.
    """

    def __init__(
        self,
        dims: int,
        num_heads: int,
        ffn_dims: int,
        dropout: float = 0.0,
        moe: Optional[dict] = None,
    ) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(
            dims, num_heads, dropout=dropout, batch_first=True
        )
        self.norm1 = nn.LayerNorm(dims)
        self.norm2 = nn.LayerNorm(dims)
        self.dropout = nn.Dropout(dropout)
        if moe is not None:
            self.ffn = AttributeMoEFFN(dims, ffn_dims, **moe)
        else:
            self.ffn = nn.Sequential(
                nn.Linear(dims, ffn_dims),
                nn.GELU(),
                nn.Linear(ffn_dims, dims),
            )

    def forward(
        self,
        x: Tensor,
        attn_mask: Optional[Tensor],
        key_padding_mask: Optional[Tensor],
        attributes: Dict[str, Tensor],
    ) -> Tensor:
        h, _ = self.attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
        )
        x = self.norm1(x + self.dropout(h))
        if isinstance(self.ffn, AttributeMoEFFN):
            h = self.ffn(x, attributes)
        else:
            h = self.ffn(x)
        return self.norm2(x + self.dropout(h))


@MODELS.register_module()
class TaskAgnosticDecoder(BaseModule):
    """Args:
    dims (int): token dims (BERT-base: 768).
    depth (int): layers (the paper: 6).
    num_heads (int): attention heads.
    ffn_ratio (float): FFN width / dims.
    dropout (float): dropout.
    moe (dict, optional): ``dict(num_experts, top_k=1, num_tasks)``: an
        attribute-routed MoE FFN in every layer, routed by ``modality``
        (spe / image / text) and ``task`` (an index < ``num_tasks``).
    init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        dims: int = 256,
        depth: int = 6,
        num_heads: int = 8,
        ffn_ratio: float = 4.0,
        dropout: float = 0.0,
        moe: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if dims % num_heads:
            raise ValueError(
                f'dims {dims} must be a multiple of num_heads {num_heads}'
            )
        moe_layer = None
        if moe is not None:
            moe = dict(moe)
            num_tasks = moe.pop('num_tasks', None)
            if not num_tasks:
                raise ValueError(
                    'moe.num_tasks is needed: the task attribute routes the '
                    'experts'
                )
            moe_layer = dict(
                moe,
                attributes=dict(modality=len(MODALITIES), task=num_tasks),
                dropout=dropout,
            )
        self.dims = dims
        self.uses_moe = moe is not None
        self.spe = nn.Parameter(torch.zeros(1, 1, dims))
        self.type_embed = nn.Embedding(len(MODALITIES), dims)
        self.input_norm = nn.LayerNorm(dims)
        self.layers = nn.ModuleList(
            BertLayer(
                dims, num_heads, int(dims * ffn_ratio), dropout, moe_layer
            )
            for _ in range(depth)
        )
        nn.init.normal_(self.spe, std=0.02)
        nn.init.normal_(self.type_embed.weight, std=0.02)

    def forward(
        self,
        tokens: Tensor,
        modality: Tensor,
        task: int = 0,
        attn_mask: Optional[Tensor] = None,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Args:
            tokens (Tensor): (N, S, dims) input tokens (no ``<SPE>``).
            modality (Tensor): (S,) or (N, S) int64, each token's modality
                (:data:`IMAGE_TYPE` / :data:`TEXT_TYPE`).
            task (int): the task index (the MoE's task attribute).
            attn_mask (Tensor, optional): (S + 1, S + 1) or
                (N * heads, S + 1, S + 1) bool, True = not attended.
            key_padding_mask (Tensor, optional): (N, S) bool, True at
                padding.

        Returns:
            Tensor: (N, S + 1, dims); index 0 is ``<SPE>``'s output.
        """
        N, S, _ = tokens.shape
        if tokens.shape[-1] != self.dims:
            raise ValueError(
                f'TaskAgnosticDecoder: tokens have {tokens.shape[-1]} dims, '
                f'the decoder {self.dims}'
            )
        if modality.dim() == 1:
            modality = modality.expand(N, S)
        modality = torch.cat(
            [modality.new_full((N, 1), SPE_TYPE), modality], dim=1
        )
        x = torch.cat([self.spe.expand(N, 1, -1), tokens], dim=1)
        x = self.input_norm(x + self.type_embed(modality))
        if key_padding_mask is not None:
            key_padding_mask = torch.cat(
                [key_padding_mask.new_zeros(N, 1), key_padding_mask], dim=1
            )
        attributes = dict(
            modality=modality, task=torch.full_like(modality, int(task))
        )
        for layer in self.layers:
            x = layer(x, attn_mask, key_padding_mask, attributes)
        return x

    def represent(
        self,
        tokens: Tensor,
        modality: Tensor,
        task: int = 0,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """The normalised ``<SPE>`` output (N, dims): ``g(f(x))``."""
        out = self(tokens, modality, task, key_padding_mask=key_padding_mask)
        return F.normalize(out[:, 0], dim=-1)
