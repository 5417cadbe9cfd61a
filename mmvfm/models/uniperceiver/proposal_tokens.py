# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's proposal tokens: ``q = q_sem + B(q_box) + M(q_mask)``.

Each region proposal of the image encoder carries a semantic feature
``q_sem`` (d,), a box ``q_box`` (4,) and a mask ``q_mask`` (H, W); its token
for the task-agnostic decoder is their sum after two embeddings:

- ``B``: the sine positional encoding of the normalised box
  ``(cx, cy, w, h)`` in [0, 1] (``num_feats`` sines and cosines per
  coordinate, ``temperature`` 10000 -- DETR's encoding of a point, applied
  to all four numbers as DAB-DETR does), then a linear layer to d;
- ``M``: the mask's probabilities (``sigmoid`` of the logits) resized to
  ``pool_size`` x ``pool_size`` (28 x 28, the paper's; bilinear, the mask
  covering the whole image), flattened, then a linear layer to d.

Our choices where the paper is silent: the box encoding (sine, as the DETR
family), the mask taken as probabilities rather than logits, bilinear
resizing of the full-image mask (no RoI crop: the box is encoded by ``B``).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor


def box_sine_encoding(
    boxes: Tensor, num_feats: int, temperature: float = 10000.0
) -> Tensor:
    """Sine encoding of normalised boxes.

    Args:
        boxes (Tensor): (..., 4) ``(cx, cy, w, h)`` in [0, 1].
        num_feats (int): features per coordinate (even).
        temperature (float): the frequency base.

    Returns:
        Tensor: (..., 4 * num_feats): per coordinate, ``sin`` at the even
        and ``cos`` at the odd frequencies, as DETR's position encoding.
    """
    if num_feats % 2:
        raise ValueError(f'num_feats must be even, got {num_feats}')
    dim_t = torch.arange(num_feats, dtype=boxes.dtype, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = boxes[..., None] * (2 * math.pi) / dim_t  # [..., 4, F]
    pos = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1)
    return pos.flatten(-3)


@MODELS.register_module()
class ProposalTokens(nn.Module):
    """Args:
    dims (int): token dims d.
    num_feats (int): sine features per box coordinate.
    pool_size (int): the mask's pooled side (the paper: 28).
    temperature (float): of the box encoding.
    """

    def __init__(
        self,
        dims: int,
        num_feats: int = 64,
        pool_size: int = 28,
        temperature: float = 10000.0,
    ) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.pool_size = pool_size
        self.temperature = temperature
        self.box_embed = nn.Linear(4 * num_feats, dims)
        self.mask_embed = nn.Linear(pool_size * pool_size, dims)

    def forward(self, sem: Tensor, boxes: Tensor, masks: Tensor) -> Tensor:
        """Args:
            sem (Tensor): (N, Q, d) semantic features ``q_sem``.
            boxes (Tensor): (N, Q, 4) normalised ``(cx, cy, w, h)``.
            masks (Tensor): (N, Q, H, W) mask logits over the image.

        Returns:
            Tensor: (N, Q, d) proposal tokens.
        """
        N, Q = sem.shape[:2]
        if boxes.shape != (N, Q, 4):
            raise ValueError(
                f'ProposalTokens: boxes must be (N, Q, 4) = {(N, Q, 4)}, '
                f'got {tuple(boxes.shape)}'
            )
        if masks.dim() != 4 or masks.shape[:2] != (N, Q):
            raise ValueError(
                f'ProposalTokens: masks must be (N, Q, H, W) with N, Q = '
                f'{(N, Q)}, got {tuple(masks.shape)}'
            )
        box = self.box_embed(
            box_sine_encoding(boxes, self.num_feats, self.temperature)
        )
        pooled = F.interpolate(
            masks.sigmoid().flatten(0, 1)[:, None],
            size=(self.pool_size, self.pool_size),
            mode='bilinear',
            align_corners=False,
        )  # [N*Q, 1, s, s]
        mask = self.mask_embed(pooled.flatten(1)).view(N, Q, -1)
        return sem + box + mask
