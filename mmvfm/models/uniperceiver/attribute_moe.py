# Copyright (c) mmvfm contributors. All rights reserved.
"""Attribute-routed mixture-of-experts FFN (Uni-Perceiver-MoE's idea, as
Uni-Perceiver v2 uses it in its decoder).

The gate reads a token's *attributes*, not its content: each attribute
(e.g. ``modality``: spe / image / text, ``task``: the task being trained)
has an embedding table; a token's attribute embedding is the sum of its
attributes' rows, the gate a linear map of it to ``num_experts`` logits,
and the token goes to the ``top_k`` experts of the softmax, their outputs
weighted by the renormalised gate values. Tokens with equal attributes thus
always share experts, whatever their content; a task's tokens of one
modality form one route.

Our choices (the paper's attribute set is not in our notes): attributes
``modality`` and ``task`` by default (Uni-Perceiver-MoE routes by token
attributes such as modality and token type), ``top_k=1`` and no capacity
limit (every token is processed by its experts: routing by attributes is
balanced by construction per batch, so nothing is dropped), experts are
two-layer GELU MLPs like the dense FFN they replace.
"""

from typing import Dict, Sequence

import torch
import torch.nn as nn
from torch import Tensor


class AttributeMoEFFN(nn.Module):
    """Args:
    dims (int): token dims.
    hidden_dims (int): each expert's hidden width.
    num_experts (int): experts.
    attributes (dict): attribute name -> number of values.
    top_k (int): experts per token.
    dropout (float): dropout after the experts.
    """

    def __init__(
        self,
        dims: int,
        hidden_dims: int,
        num_experts: int,
        attributes: Dict[str, int],
        top_k: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 2:
            raise ValueError(f'num_experts must be >= 2, got {num_experts}')
        if not 1 <= top_k <= num_experts:
            raise ValueError(
                f'top_k must be in [1, num_experts={num_experts}], got {top_k}'
            )
        if not attributes:
            raise ValueError('attributes: at least one is needed to route by')
        self.num_experts = num_experts
        self.top_k = top_k
        self.attribute_names = tuple(attributes)
        self.attr_embed = nn.ModuleDict(
            {
                name: nn.Embedding(count, dims)
                for name, count in attributes.items()
            }
        )
        self.gate = nn.Linear(dims, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dims, hidden_dims),
                nn.GELU(),
                nn.Linear(hidden_dims, dims),
            )
            for _ in range(num_experts)
        )
        self.dropout = nn.Dropout(dropout)
        for emb in self.attr_embed.values():
            nn.init.normal_(emb.weight, std=1.0)

    def route(self, attributes: Dict[str, Tensor]) -> Sequence[Tensor]:
        """Gate weights and expert indices of tokens with ``attributes``.

        Args:
            attributes (dict): name -> (N, S) int64 values, one per token.

        Returns:
            tuple: weights (N, S, top_k) summing to 1 over the last dim,
            experts (N, S, top_k) int64.
        """
        missing = set(self.attribute_names) - set(attributes)
        if missing:
            raise KeyError(
                f'AttributeMoEFFN: tokens lack the attributes '
                f'{sorted(missing)} (routes by {self.attribute_names})'
            )
        embed = sum(
            self.attr_embed[name](attributes[name])
            for name in self.attribute_names
        )
        probs = self.gate(embed).softmax(-1)  # [N, S, E]
        weights, experts = probs.topk(self.top_k, dim=-1)
        return weights / weights.sum(-1, keepdim=True), experts

    def forward(self, x: Tensor, attributes: Dict[str, Tensor]) -> Tensor:
        """Args:
            x (Tensor): (N, S, dims) tokens.
            attributes (dict): name -> (N, S) int64 values.

        Returns:
            Tensor: (N, S, dims).
        """
        weights, experts = self.route(attributes)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            hit = experts == e  # [N, S, k]
            if not bool(hit.any()):
                continue
            w = (weights * hit).sum(-1)  # [N, S]
            rows = hit.any(-1)  # tokens routed to e
            out[rows] = out[rows] + w[rows, None] * expert(x[rows])
        return self.dropout(out)
