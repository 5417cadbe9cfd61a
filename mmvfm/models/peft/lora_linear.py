# Copyright (c) mmvfm contributors. All rights reserved.
"""A linear layer with a LoRA adapter, also on parts of a fused projection.

LoRA (Hu et al., ICLR 2022, arXiv 2106.09685): ``y = W x + b + s B A x``
with ``A`` (r, in), ``B`` (out, r), ``s = alpha / r``, ``B`` initialised to
zero (the adapter starts as the identity change) and ``A`` Kaiming-uniform.

Fused projections (a ViT's ``qkv``: ``out = n * part``): ``parts`` says
which of the ``n`` row blocks get an adapter, e.g. ``[True, False, True]``
for q and v only (ViSFT, as loralib's ``MergedLinear(enable_lora=...)``).
Each enabled part ``j`` has its own ``A_j`` (r, in) and ``B_j`` (part, r);
they are stored stacked in loralib's shapes so that ViSFT's release files
map one to one:

- ``lora_A``: (k r, in), ``A_j = lora_A[j r:(j + 1) r]``;
- ``lora_B``: (k part, r), ``B_j = lora_B[j part:(j + 1) part]``;

with ``k`` the number of enabled parts (``parts=None``: one part, the whole
output: plain LoRA, ``A`` (r, in), ``B`` (out, r)).

:class:`LoRALinear` subclasses ``nn.Linear`` and keeps its ``weight`` and
``bias`` (same parameter names), so a checkpoint of the plain model loads
into the adapted one (the ``lora_*`` keys missing) and the other way round.
Which parameters train is not decided here: see
``MultiTaskModel(freeze=dict(trainable=[r'\\.lora_']))``.
"""

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a (partial) LoRA adapter (module docstring).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        rank (int): ``r`` >= 1.
        alpha (float): ``s = alpha / r``.
        dropout (float): dropout on the adapter's input (training only).
        parts (Sequence[bool], optional): enabled row blocks of a fused
            projection; ``out_features`` must divide by its length.

    Attributes:
        merged (bool): ``s B A`` is added into ``weight`` (:meth:`merge`).
        lora_enabled (bool): the adapter is applied (:meth:`set_enabled`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rank: int = 8,
        alpha: float = 1.0,
        dropout: float = 0.0,
        parts: Optional[Sequence[bool]] = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f'LoRA rank must be an int >= 1, got {rank!r}')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'LoRA dropout must be in [0, 1), got {dropout}')
        parts = [True] if parts is None else [bool(p) for p in parts]
        if not any(parts):
            raise ValueError(f'LoRA parts {parts}: no part enabled')
        if out_features % len(parts):
            raise ValueError(
                f'LoRA parts {parts}: out_features {out_features} does not '
                f'split into {len(parts)} parts'
            )
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.parts = parts
        self.part_size = out_features // len(parts)
        num = sum(parts)
        kw = dict(device=device, dtype=dtype)
        self.lora_A = nn.Parameter(torch.empty(num * rank, in_features, **kw))
        self.lora_B = nn.Parameter(
            torch.empty(num * self.part_size, rank, **kw)
        )
        self.lora_dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.merged = False
        self.lora_enabled = True
        self.reset_lora_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **lora_kwargs) -> 'LoRALinear':
        """The adapted layer sharing ``linear``'s weight and bias
        parameters (values, ``requires_grad`` and all)."""
        if isinstance(linear, LoRALinear):
            raise TypeError('the layer already has a LoRA adapter')
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            **lora_kwargs,
        )
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.train(linear.training)
        return layer

    def reset_lora_parameters(self) -> None:
        """``A`` Kaiming-uniform (as ``nn.Linear``'s weight), ``B`` zero."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    # ------------------------------------------------------------------
    def _part_index(self) -> List[int]:
        return [i for i, on in enumerate(self.parts) if on]

    def delta_weight(self) -> Tensor:
        """``s B A`` as an (out, in) matrix, zero in disabled parts."""
        r, num = self.rank, sum(self.parts)
        A = self.lora_A.view(num, r, self.in_features)
        B = self.lora_B.view(num, self.part_size, r)
        delta = torch.bmm(B, A) * self.scaling  # [k, part, in]
        if num == len(self.parts):
            return delta.reshape(self.out_features, self.in_features)
        full = delta.new_zeros(
            len(self.parts), self.part_size, self.in_features
        )
        full[self._part_index()] = delta
        return full.view(self.out_features, self.in_features)

    def lora_forward(self, x: Tensor) -> Tensor:
        """The adapter's output ``s B A dropout(x)``: (..., out)."""
        r, num = self.rank, sum(self.parts)
        h = F.linear(self.lora_dropout(x), self.lora_A)  # [..., k*r]
        h = h.unflatten(-1, (num, r))  # [..., k, r]
        B = self.lora_B.view(num, self.part_size, r)
        out = torch.einsum('...kr,kor->...ko', h, B) * self.scaling
        if num < len(self.parts):  # zeros for the disabled parts
            full = out.new_zeros(
                *out.shape[:-2], len(self.parts), self.part_size
            )
            full[..., self._part_index(), :] = out
            out = full
        return out.flatten(-2)  # [..., out]

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            if (
                self.training
                and torch.is_grad_enabled()
                and (self.lora_A.requires_grad or self.lora_B.requires_grad)
            ):
                raise RuntimeError(
                    'LoRA: training a merged layer would train the merged '
                    'weight, not the adapter; call unmerge() first (or '
                    'freeze lora_A / lora_B)'
                )
            return out
        if not self.lora_enabled:
            return out
        return out + self.lora_forward(x)

    # ------------------------------------------------------------------
    @torch.no_grad()
    def merge(self) -> None:
        """Add ``s B A`` into ``weight``: a plain linear layer's cost."""
        if self.merged:
            raise RuntimeError('LoRA: the layer is already merged')
        if not self.lora_enabled:
            raise RuntimeError('LoRA: merging a disabled adapter')
        self.weight += self.delta_weight().to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``s B A`` from ``weight`` again."""
        if not self.merged:
            raise RuntimeError('LoRA: the layer is not merged')
        self.weight -= self.delta_weight().to(self.weight.dtype)
        self.merged = False

    def set_enabled(self, enabled: bool) -> None:
        """Apply the adapter (True) or run the base layer alone (False)."""
        if self.merged and not enabled:
            raise RuntimeError(
                'LoRA: the adapter is merged into the weight; unmerge() '
                'before disabling it'
            )
        self.lora_enabled = bool(enabled)

    def extra_repr(self) -> str:
        parts = '' if len(self.parts) == 1 else f', parts={self.parts}'
        return (
            f'{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}'
            f'{parts}, merged={self.merged}'
        )
