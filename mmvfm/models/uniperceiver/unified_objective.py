# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's unified maximum-likelihood objective.

Every task is a choice among candidates: with ``a = g(f(x))`` the input's
representation and ``b_z = g(f(z))`` each candidate's,
``P(x, z) ∝ exp(cos(a, b_z) / τ)`` and the loss of the right candidate
``y`` is ``-log P(x, y) / Σ_{z ∈ Y} P(x, z)``: a cross-entropy over the
candidate set ``Y`` with logits ``cos / τ``.

``τ`` is learnable, stored as ``logit_scale = log(1 / τ)`` and clamped so
that ``1 / τ <= max_scale`` (as CLIP: 100). One objective (one ``τ``) is
shared by all tasks of a model. The task weight ``w_k`` is applied by the
model; the sampling ratio ``s_k`` is *not* a factor of the loss: it is
already how often the task is drawn.
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class UnifiedMLELoss(nn.Module):
    """Args:
    init_temperature (float): initial ``τ``.
    max_scale (float): the largest ``1 / τ``.
    """

    def __init__(
        self, init_temperature: float = 0.07, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError(
                f'init_temperature must be > 0, got {init_temperature}'
            )
        if not max_scale >= 1 / init_temperature:
            raise ValueError(
                f'max_scale {max_scale} is below 1 / init_temperature '
                f'{1 / init_temperature:g}'
            )
        self.max_scale = float(max_scale)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature))
        )

    @property
    def scale(self) -> Tensor:
        """``1 / τ``, clamped to ``max_scale`` (a scalar tensor)."""
        return self.logit_scale.clamp(max=math.log(self.max_scale)).exp()

    def logits(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """``cos(queries, candidates) / τ``: (N, D), (M, D) -> (N, M)."""
        q = F.normalize(queries, dim=-1)
        c = F.normalize(candidates, dim=-1)
        return self.scale * q @ c.t()

    def forward(
        self,
        queries: Tensor,
        candidates: Tensor,
        targets: Tensor,
        weight: Optional[Tensor] = None,
    ) -> Tensor:
        """Mean negative log-likelihood of the right candidates.

        Args:
            queries (Tensor): (N, D) representations ``g(f(x))``.
            candidates (Tensor): (M, D) representations ``g(f(z))``.
            targets (Tensor): (N,) int64 index of each query's candidate.
            weight (Tensor, optional): (N,) per-query weights (e.g. 0 at
                padding); the mean is over their sum.

        Returns:
            Tensor: the scalar loss.
        """
        if candidates.shape[0] < 2:
            raise ValueError(
                f'UnifiedMLELoss: {candidates.shape[0]} candidate(s): the '
                'likelihood of the only candidate is 1, its loss 0 '
                '(nothing to learn)'
            )
        nll = F.cross_entropy(
            self.logits(queries, candidates), targets, reduction='none'
        )
        if weight is None:
            return nll.mean()
        return (nll * weight).sum() / weight.sum().clamp_min(1e-12)
