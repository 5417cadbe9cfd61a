# Copyright (c) mmvfm contributors. All rights reserved.
from typing import Tuple

import torch
import torch.nn as nn
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class GatedFPN(FPN):
    """An FPN whose output levels are scaled by learnable per-level gates.

    ``out_i = tanh(g_i) * FPN(x)_i / tanh(1)`` with ``g_i`` initialised to
    1, so an untrained GatedFPN equals the stock FPN and each level can be
    turned down during training. It is the example of the incubator: a
    module of one's own, registered into mmdet's ``MODELS`` and mixed into
    an existing config through ``custom_imports``.

    Args:
        *args, **kwargs: as :class:`mmdet.models.necks.FPN`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gates = nn.Parameter(torch.ones(self.num_outs))

    def forward(self, inputs: Tuple[Tensor]) -> Tuple[Tensor]:
        """Args: ``inputs``, backbone maps ``[N, C_i, H_i, W_i]``.

        Returns:
            tuple[Tensor]: ``num_outs`` maps ``[N, out_channels, H, W]``.
        """
        outs = super().forward(inputs)
        scale = torch.tanh(self.gates) / torch.tanh(torch.ones(()))
        return tuple(out * scale[i] for i, out in enumerate(outs))
