# Copyright (c) mmvfm contributors. All rights reserved.
"""SiAFusionNeck: top-down feature fusion into levels of exactly 2x size.

Input: backbone maps fine to coarse, as mmdet backbones return them,
``x_i`` (B, in_channels[i], H_i, W_i). Output: ``L = len(in_channels)``
maps (B, out_channels, h_l, w_l) **coarse to fine** with
``h_l = 2^l h_0`` and ``w_l = 2^l w_0`` exactly, where (h_0, w_0) is the
coarsest input's size.

Like an FPN: a 1x1 lateral conv per level, a top-down path that adds the
nearest-2x-upsampled merged coarser map, and a 3x3 output conv per level.

Beyond an FPN:

- exact 2x alignment: the FPN resizes the upsampled map to whatever size
  the lateral has (``F.interpolate(size=...)``), so a level can be 2x+1
  or 2x-1 the coarser one and cell (i, j) is not the parent of cells
  (2i..2i+1, 2j..2j+1). Here every lateral is zero-padded (bottom/right)
  or cropped to exactly twice the merged coarser map first
  (``align='pad'``), or a size mismatch raises (``align='strict'``); so
  the attention maps of the SiA op (:mod:`mmvfm.ops.similar_attention`)
  upsample cell for cell. With the batch padded to a multiple of the
  coarsest stride (``data_preprocessor.pad_size_divisor``; checked by
  :class:`~mmvfm.models.sia.SiADETR`) strided ResNet-like backbones
  already give exact sizes and nothing is padded or cropped; the
  alignment catches off-by-one backbones (floor rounding, odd stems);
- output order coarse to fine, the SiA op's order (an FPN returns fine to
  coarse);
- an optional learned gate on the top-down term, ``lat_l + g * up(m_{l-1})``:
  ``gate='channel'``, ``g = 2 sigmoid(theta_l)`` per channel, or
  ``gate='spatial'``, ``g = 2 sigmoid(conv3x3([lat_l, up(m_{l-1})]))``
  per position (one map shared by the channels); both start at
  ``g = 1`` (theta and the conv are zero-initialised), i.e. exactly the
  FPN sum, and can learn to pass more or less of the coarse context;
  ``gate=None`` is the FPN sum;
- no extra coarser levels (a stride-2 conv on an odd map breaks exact
  2x).
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

GATES = (None, 'channel', 'spatial')
ALIGNS = ('pad', 'strict')


def _up2(x: Tensor) -> Tensor:
    """Nearest 2x upsampling (B, C, h, w) -> (B, C, 2h, 2w)."""
    return F.interpolate(x, scale_factor=2.0, mode='nearest')


@MODELS.register_module()
class SiAFusionNeck(BaseModule):
    """Top-down fusion into coarse-to-fine levels of exactly 2x size.

    Args:
        in_channels: channels of the backbone maps, fine to coarse.
        out_channels: channels of every output level.
        gate: None (FPN sum), ``'channel'`` or ``'spatial'``.
        align: ``'pad'`` (zero-pad or crop each lateral to twice the
            coarser level) or ``'strict'`` (raise on a mismatch).
        conv_cfg, norm_cfg, act_cfg: of the 3x3 output convs (the 1x1
            laterals have no norm and no activation), as in mmdet's FPN.
        init_cfg: defaults to xavier-uniform convs, as mmdet's FPN.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        gate: Optional[str] = None,
        align: str = 'pad',
        conv_cfg: Optional[dict] = None,
        norm_cfg: Optional[dict] = None,
        act_cfg: Optional[dict] = None,
        init_cfg: Optional[dict] = dict(
            type='Xavier', layer='Conv2d', distribution='uniform'
        ),
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if gate not in GATES:
            raise ValueError(f'gate must be one of {GATES}, got {gate!r}')
        if align not in ALIGNS:
            raise ValueError(f'align must be one of {ALIGNS}, got {align!r}')
        if len(in_channels) < 1:
            raise ValueError('in_channels must name at least one level')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_levels = len(in_channels)
        self.gate = gate
        self.align = align
        # built coarse to fine, like the outputs
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, act_cfg=None, inplace=False)
            for c in self.in_channels[::-1]
        )
        self.out_convs = nn.ModuleList(
            ConvModule(
                out_channels,
                out_channels,
                3,
                padding=1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg,
                inplace=False,
            )
            for _ in self.in_channels
        )
        # gates of levels 1..L-1 (level 0 has no coarser level)
        self.gates = None
        self.channel_gates = None
        if gate == 'channel':
            self.channel_gates = nn.Parameter(
                torch.zeros(self.num_levels - 1, out_channels)
            )
        elif gate == 'spatial':
            self.gates = nn.ModuleList(
                nn.Conv2d(2 * out_channels, 1, 3, padding=1)
                for _ in range(self.num_levels - 1)
            )

    def init_weights(self) -> None:
        super().init_weights()
        # the gates start at g = 2 sigmoid(0) = 1, the FPN sum
        if self.gates is not None:
            for conv in self.gates:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        if self.channel_gates is not None:
            nn.init.zeros_(self.channel_gates)

    def _aligned(self, lat: Tensor, size: Tuple[int, int], level: int):
        """``lat`` zero-padded/cropped at the bottom/right to ``size``."""
        h, w = lat.shape[-2:]
        if (h, w) == size:
            return lat
        if self.align == 'strict':
            raise ValueError(
                f'SiAFusionNeck: level {level} (coarse to fine) is {h}x{w}, '
                f'expected exactly {size[0]}x{size[1]} (twice level '
                f'{level - 1}); pad the batch to a multiple of the coarsest '
                f'stride (data_preprocessor.pad_size_divisor) or use '
                f"align='pad'"
            )
        return F.pad(lat, (0, size[1] - w, 0, size[0] - h))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """
        Args:
            inputs: ``num_levels`` maps (B, in_channels[i], H_i, W_i),
                fine to coarse.

        Returns:
            tuple: ``num_levels`` maps (B, out_channels, h_l, w_l), coarse
            to fine, each exactly twice the previous.
        """
        if len(inputs) != self.num_levels:
            raise ValueError(
                f'SiAFusionNeck expects {self.num_levels} inputs, got '
                f'{len(inputs)}'
            )
        coarse_to_fine = list(inputs)[::-1]
        merged: List[Tensor] = []
        for lvl, (x, lateral) in enumerate(
            zip(coarse_to_fine, self.lateral_convs)
        ):
            lat = lateral(x)
            if lvl == 0:
                merged.append(lat)
                continue
            up = _up2(merged[-1])
            lat = self._aligned(lat, tuple(up.shape[-2:]), lvl)
            if self.gate == 'channel':
                g = 2 * self.channel_gates[lvl - 1].sigmoid()
                up = up * g.view(1, -1, 1, 1)
            elif self.gate == 'spatial':
                g = 2 * self.gates[lvl - 1](torch.cat([lat, up], 1)).sigmoid()
                up = up * g
            merged.append(lat + up)
        return tuple(conv(m) for conv, m in zip(self.out_convs, merged))
