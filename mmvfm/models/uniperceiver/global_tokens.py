# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's global image tokens: learned queries, each an
attention pooling over the image's map tokens."""

import torch
import torch.nn as nn
from torch import Tensor


class GlobalTokens(nn.Module):
    """``num`` attention-pooling heads over the image tokens.

    Args:
        dims (int): token dims.
        num (int): global tokens (learned queries).
        num_heads (int): heads of each pooling attention.
    """

    def __init__(self, dims: int, num: int, num_heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(num, dims))
        self.attn = nn.MultiheadAttention(dims, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dims)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, S, dims) -> (N, num, dims)."""
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        out, _ = self.attn(q, tokens, tokens, need_weights=False)
        return self.norm(out)
