# Copyright (c) mmvfm contributors. All rights reserved.
"""A simple feature pyramid from a plain ViT's last map (ViTDet-style).

ViTDet (Li et al., ECCV 2022, arXiv 2203.16527) builds the pyramid from the
last map alone: for each scale factor, ``4``: two stride-2 transposed
convolutions (LayerNorm + GELU between them), ``2``: one, ``1``: the map
itself, ``0.5``: a stride-2 max pooling; then a 1x1 and a 3x3 convolution,
each followed by a channel LayerNorm, to ``out_channels``. Extra levels
(``num_extra_levels``, e.g. P6 for an RPN or RetinaNet) are stride-2 max
poolings of the last output, as ViTDet's ``LastLevelMaxPool``.

mmdet 3.3's package ships no such neck (its ``SimpleFPN`` lives in the
repository's ``projects/ViTDet``, which pip does not install); this one is
written for mmvfm. Input: the backbone's outputs (a tuple); the last one,
``(B, in_channels, h, w)``, is used (mmpretrain's ``VisionTransformer``
with ``out_type='featmap'``).
"""

from typing import List, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

SCALES = (4.0, 2.0, 1.0, 0.5)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        # [B, C, H, W] -> [B, H, W, C] -> norm -> back
        return F.layer_norm(
            x.permute(0, 2, 3, 1),
            self.normalized_shape,
            self.weight,
            self.bias,
            self.eps,
        ).permute(0, 3, 1, 2)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple pyramid (module docstring).

    Args:
        in_channels (int): channels of the backbone's last map.
        out_channels (int): channels of every output level.
        scale_factors (Sequence[float]): each in (4, 2, 1, 0.5), fine to
            coarse; with a stride-16 ViT the default gives strides
            4, 8, 16, 32.
        num_extra_levels (int): stride-2 max poolings of the last output
            appended (ViTDet's P6 for the RPN: 1).
        init_cfg (dict, optional): initialisation config.

    Returns (forward):
        tuple[Tensor]: ``len(scale_factors) + num_extra_levels`` maps
        ``(B, out_channels, h * s, w * s)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale_factors: Sequence[float] = SCALES,
        num_extra_levels: int = 0,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        scale_factors = [float(s) for s in scale_factors]
        bad = [s for s in scale_factors if s not in SCALES]
        if bad or not scale_factors:
            raise ValueError(
                f'scale_factors {scale_factors}: each must be one of {SCALES}'
            )
        if list(scale_factors) != sorted(scale_factors, reverse=True):
            raise ValueError(
                f'scale_factors {scale_factors} must go fine to coarse'
            )
        if num_extra_levels < 0:
            raise ValueError(
                f'num_extra_levels must be >= 0, got {num_extra_levels}'
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = scale_factors
        self.num_extra_levels = num_extra_levels
        self.stages = nn.ModuleList()
        for scale in scale_factors:
            layers: List[nn.Module] = []
            dim = in_channels
            if scale == 4.0:
                layers += [
                    nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                    LayerNorm2d(dim // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
                ]
                dim //= 4
            elif scale == 2.0:
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                dim //= 2
            elif scale == 0.5:
                layers.append(nn.MaxPool2d(2, stride=2))
            layers += [
                nn.Conv2d(dim, out_channels, 1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(
                    out_channels, out_channels, 3, padding=1, bias=False
                ),
                LayerNorm2d(out_channels),
            ]
            self.stages.append(nn.Sequential(*layers))

    @property
    def strides(self) -> List[float]:
        """Each output's stride relative to the input map's."""
        base = [1.0 / s for s in self.scale_factors]
        return base + [
            base[-1] * 2 ** (i + 1) for i in range(self.num_extra_levels)
        ]

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        x = inputs[-1] if isinstance(inputs, (list, tuple)) else inputs
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'SimpleFeaturePyramid: expected a (B, {self.in_channels}, '
                f"h, w) map (the backbone's last output; mmpretrain ViT: "
                f"out_type='featmap'), got {tuple(x.shape)}"
            )
        outs = [stage(x) for stage in self.stages]
        for _ in range(self.num_extra_levels):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
