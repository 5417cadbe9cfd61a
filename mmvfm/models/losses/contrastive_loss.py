# Copyright (c) mmvfm contributors. All rights reserved.
"""Symmetric InfoNCE (CLIP) with a learnable, clamped temperature.

For L2-normalised image features ``I`` (N, D) and text features ``T``
(N, D) of matching pairs, logits ``s I T^T`` with ``s = exp(logit_scale)``
and the loss the mean of the image->text and text->image cross-entropies
with the pair index as the target (Radford et al., 2021). ``logit_scale``
is a parameter of the loss, initialised to ``log(1 / 0.07)`` and clamped to
``[0, log(max_scale)]`` (CLIP clamps at 100) when the logits are formed.

Across ranks (``gather=True``, the default): each rank's rows are the
queries against the keys of *all* ranks (``all_gather_with_grad``), with
targets offset by ``rank * N``; the gradient then reaches every rank's
features, and one process with the concatenated batch computes the same
loss and gradients (tested with two gloo processes).
"""

import math
from typing import Dict

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor

from ..common import all_gather_with_grad


@MODELS.register_module()
class ContrastiveLoss(nn.Module):
    """Args:
    init_temperature (float): ``1 / s`` at initialisation.
    max_scale (float): the clamp of ``s``.
    learnable (bool): train ``logit_scale``.
    gather (bool): keys from every rank (module docstring).
    loss_weight (float): multiplies the loss.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_scale: float = 100.0,
        learnable: bool = True,
        gather: bool = True,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0 < init_temperature:
            raise ValueError('init_temperature must be > 0')
        if max_scale < 1.0 / init_temperature:
            raise ValueError(
                f'max_scale {max_scale} is below the initial scale '
                f'{1.0 / init_temperature}'
            )
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature)),
            requires_grad=learnable,
        )
        self.max_log_scale = math.log(max_scale)
        self.gather = gather
        self.loss_weight = loss_weight

    @property
    def scale(self) -> Tensor:
        """``s``, clamped."""
        return self.logit_scale.clamp(0, self.max_log_scale).exp()

    def forward(self, image: Tensor, text: Tensor) -> Dict[str, Tensor]:
        """Args:
            image (Tensor): (N, D) image features of this rank.
            text (Tensor): (N, D) the matching text features.

        Returns:
            dict: ``loss_contrastive`` and, for logging (no gradient),
            ``temperature`` (``1 / s``).
        """
        if image.shape != text.shape or image.dim() != 2:
            raise ValueError(
                f'ContrastiveLoss: image {tuple(image.shape)} and text '
                f'{tuple(text.shape)} must both be (N, D)'
            )
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        offset = 0
        all_image, all_text = image, text
        if self.gather and dist.is_available() and dist.is_initialized():
            offset = dist.get_rank() * image.shape[0]
            all_image = all_gather_with_grad(image)
            all_text = all_gather_with_grad(text)
        scale = self.scale
        target = torch.arange(image.shape[0], device=image.device) + offset
        i2t = F.cross_entropy(scale * image @ all_text.T, target)
        t2i = F.cross_entropy(scale * text @ all_image.T, target)
        return dict(
            loss_contrastive=self.loss_weight * (i2t + t2i) / 2,
            temperature=(1.0 / scale).detach(),
        )
