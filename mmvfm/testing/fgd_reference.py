# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD computed the way the reference code computes it: the test oracle and
the benchmark baseline.

:class:`FGDLossReference` has the constructor, the submodules and the
initialisation of :class:`~mmvfm.models.losses.FGDLoss` (it subclasses it
for them) but a ``forward`` that follows the reference implementation of
FGD (Yang et al., CVPR 2022, class ``FeatureLoss`` of yzd-v/FGD) step by
step, rewritten here:

- the masks are built per image with a Python loop over the boxes, each
  assigning ``mask[y1:y2 + 1, x1:x2 + 1] = max(mask[...], area)``;
- the background mask comes from ``torch.where`` and is divided by its sum
  when that is nonzero;
- the feature terms multiply both maps by ``sqrt(S_t)``, ``sqrt(C_t)`` and
  ``sqrt(mask)`` into full-size copies and take a summed MSE;
- the relation term calls ``conv_mask_*`` as convolutions and
  ``channel_add_conv_*`` as the ``nn.Sequential`` and materialises both
  ``out_s`` and ``out_t``.

It is slow on purpose, is not registered and lives in
:mod:`mmvfm.testing` (not in the models' public API); use
:class:`~mmvfm.models.losses.FGDLoss` for training. The tests
(tests/test_models/test_losses/test_fgd_loss.py) and the benchmark
(benchmarks/fgd_loss.py) compare :class:`FGDLoss` with it.

Two switches make it comparable with :class:`FGDLoss`:

- ``box_scale``: ``'img_shape'`` (the default here) scales the boxes by
  ``img_shape`` as the reference code does; ``'pad'`` by
  ``batch_input_shape`` as :class:`FGDLoss` does by default.
- ``drop_zero_rows``: ``False`` (the default here) keeps all-zero box rows,
  which the reference code turns into a foreground pixel ``(0, 0)`` with
  weight 1; ``True`` drops them as :class:`FGDLoss` does.

Unlike :class:`FGDLoss` it does not clip the boxes to the image, and it
computes in the dtype of its inputs (no float32 promotion of half inputs).
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmvfm.models.losses import FGDLoss


class FGDLossReference(FGDLoss):
    """FGD as the reference code computes it (oracle and baseline).

    Args:
        student_channels (int): Channels of the student map.
        teacher_channels (int): Channels of the teacher map.
        temp (float): Attention temperature. Defaults to 0.5.
        alpha_fgd (float): Weight of the foreground term. Defaults to 1e-3.
        beta_fgd (float): Weight of the background term. Defaults to 5e-4.
        gamma_fgd (float): Weight of the attention term. Defaults to 1e-3.
        lambda_fgd (float): Weight of the relation term. Defaults to 5e-6.
        box_scale (str): ``'img_shape'`` (reference behaviour, default) or
            ``'pad'``; see :class:`FGDLoss`.
        drop_zero_rows (bool): Drop all-zero box rows as :class:`FGDLoss`
            does. Defaults to False (reference behaviour).
        name (str, optional): Deprecated and ignored, as in
            :class:`FGDLoss`.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        temp: float = 0.5,
        alpha_fgd: float = 1e-3,
        beta_fgd: float = 5e-4,
        gamma_fgd: float = 1e-3,
        lambda_fgd: float = 5e-6,
        box_scale: str = 'img_shape',
        drop_zero_rows: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(
            student_channels,
            teacher_channels,
            temp=temp,
            alpha_fgd=alpha_fgd,
            beta_fgd=beta_fgd,
            gamma_fgd=gamma_fgd,
            lambda_fgd=lambda_fgd,
            box_scale=box_scale,
            name=name,
        )
        self.drop_zero_rows = bool(drop_zero_rows)

    def forward(
        self,
        preds_S: Tensor,
        preds_T: Tensor,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
        return_terms: bool = False,
    ) -> Union[Tensor, Dict[str, Tensor]]:
        """The weighted FGD loss of one level, computed as the reference.

        Args:
            preds_S (Tensor): Student map, shape (N, Cs, H, W).
            preds_T (Tensor): Teacher map, shape (N, C, H, W).
            gt_bboxes (Sequence[Tensor]): N boxes tensors (n_i, 4), xyxy in
                input pixels.
            batch_img_metas (list[dict]): N metas with ``'img_shape'`` and,
                for ``box_scale='pad'``, ``'batch_input_shape'``.
            return_terms (bool): Return the four weighted terms instead of
                their sum.

        Returns:
            Tensor | dict: The scalar loss, or ``dict(fg, bg, at, rela)``.
        """
        assert preds_S.shape[-2:] == preds_T.shape[-2:]
        if self.align is not None:
            preds_S = self.align(preds_S)
        N, C, H, W = preds_S.shape

        S_attention_t, C_attention_t = self.get_attention(preds_T)
        S_attention_s, C_attention_s = self.get_attention(preds_S)

        Mask_fg, Mask_bg = self.get_masks_reference(
            gt_bboxes, batch_img_metas, S_attention_t
        )

        fg_loss, bg_loss = self._fea_loss(
            preds_S, preds_T, Mask_fg, Mask_bg, C_attention_t, S_attention_t
        )
        mask_loss_c = torch.sum(torch.abs(C_attention_s - C_attention_t))
        mask_loss_s = torch.sum(torch.abs(S_attention_s - S_attention_t))
        mask_loss = mask_loss_c / len(C_attention_s) + mask_loss_s / len(
            S_attention_s
        )
        rela_loss = self._rela_loss(preds_S, preds_T)

        terms = dict(
            fg=self.alpha_fgd * fg_loss,
            bg=self.beta_fgd * bg_loss,
            at=self.gamma_fgd * mask_loss,
            rela=self.lambda_fgd * rela_loss,
        )
        if return_terms:
            return terms
        return terms['fg'] + terms['bg'] + terms['at'] + terms['rela']

    def get_attention(self, preds: Tensor) -> Tuple[Tensor, Tensor]:
        """Spatial (N, H, W) and channel (N, C) attention of a map
        (N, C, H, W), as the reference computes them."""
        N, C, H, W = preds.shape
        value = torch.abs(preds)
        fea_map = value.mean(dim=1, keepdim=True)
        S_attention = (
            H * W * F.softmax((fea_map / self.temp).view(N, -1), dim=1)
        ).view(N, H, W)
        channel_map = value.mean(dim=2, keepdim=False).mean(
            dim=2, keepdim=False
        )
        C_attention = C * F.softmax(channel_map / self.temp, dim=1)
        return S_attention, C_attention

    def get_masks_reference(
        self,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
        like: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """Foreground and background masks, one box at a time.

        Args:
            gt_bboxes (Sequence[Tensor]): N boxes tensors (n_i, 4), xyxy.
            batch_img_metas (list[dict]): N image metas.
            like (Tensor): Spatial attention (N, H, W) whose shape, dtype
                and device the masks take.

        Returns:
            tuple[Tensor, Tensor]: ``Mask_fg`` and ``Mask_bg``, (N, H, W).
        """
        N, H, W = like.shape
        key = (
            'img_shape'
            if self.box_scale == 'img_shape'
            else ('batch_input_shape')
        )
        Mask_fg = torch.zeros_like(like)
        Mask_bg = torch.ones_like(like)
        for i in range(N):
            boxes = gt_bboxes[i]
            if hasattr(boxes, 'tensor'):
                boxes = boxes.tensor
            if self.drop_zero_rows:
                boxes = boxes[boxes.ne(0).any(dim=1)]
            size_h, size_w = batch_img_metas[i][key][:2]
            scaled = torch.ones_like(boxes)
            scaled[:, 0] = boxes[:, 0] / size_w * W
            scaled[:, 2] = boxes[:, 2] / size_w * W
            scaled[:, 1] = boxes[:, 1] / size_h * H
            scaled[:, 3] = boxes[:, 3] / size_h * H
            wmin = torch.floor(scaled[:, 0]).int()
            wmax = torch.ceil(scaled[:, 2]).int()
            hmin = torch.floor(scaled[:, 1]).int()
            hmax = torch.ceil(scaled[:, 3]).int()
            # int tensors: the area is float32 (default dtype) as there.
            area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
            for j in range(len(boxes)):
                y1, y2 = int(hmin[j]), int(hmax[j])
                x1, x2 = int(wmin[j]), int(wmax[j])
                Mask_fg[i][y1 : y2 + 1, x1 : x2 + 1] = torch.maximum(
                    Mask_fg[i][y1 : y2 + 1, x1 : x2 + 1], area[j]
                )
            Mask_bg[i] = torch.where(Mask_fg[i] > 0, 0, 1)
            if torch.sum(Mask_bg[i]):
                Mask_bg[i] /= torch.sum(Mask_bg[i])
        return Mask_fg, Mask_bg

    def _fea_loss(
        self,
        preds_S: Tensor,
        preds_T: Tensor,
        Mask_fg: Tensor,
        Mask_bg: Tensor,
        C_t: Tensor,
        S_t: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """Unweighted foreground and background terms (scalars) from the
        maps (N, C, H, W), masks (N, H, W) and teacher attention C_t
        (N, C), S_t (N, H, W)."""
        loss_mse = nn.MSELoss(reduction='sum')
        Mask_fg = Mask_fg.unsqueeze(dim=1)
        Mask_bg = Mask_bg.unsqueeze(dim=1)
        C_t = C_t.unsqueeze(dim=-1).unsqueeze(dim=-1)
        S_t = S_t.unsqueeze(dim=1)

        fea_t = torch.mul(preds_T, torch.sqrt(S_t))
        fea_t = torch.mul(fea_t, torch.sqrt(C_t))
        fg_fea_t = torch.mul(fea_t, torch.sqrt(Mask_fg))
        bg_fea_t = torch.mul(fea_t, torch.sqrt(Mask_bg))

        fea_s = torch.mul(preds_S, torch.sqrt(S_t))
        fea_s = torch.mul(fea_s, torch.sqrt(C_t))
        fg_fea_s = torch.mul(fea_s, torch.sqrt(Mask_fg))
        bg_fea_s = torch.mul(fea_s, torch.sqrt(Mask_bg))

        fg_loss = loss_mse(fg_fea_s, fg_fea_t) / len(Mask_fg)
        bg_loss = loss_mse(bg_fea_s, bg_fea_t) / len(Mask_bg)
        return fg_loss, bg_loss

    def _spatial_pool(self, x: Tensor, conv_mask: nn.Module) -> Tensor:
        """GcBlock context (N, C, 1, 1) of a map x (N, C, H, W)."""
        batch, channel, height, width = x.size()
        input_x = x.view(batch, channel, height * width).unsqueeze(1)
        context_mask = conv_mask(x).view(batch, 1, height * width)
        context_mask = F.softmax(context_mask, dim=2).unsqueeze(-1)
        context = torch.matmul(input_x, context_mask)
        return context.view(batch, channel, 1, 1)

    def _rela_loss(self, preds_S: Tensor, preds_T: Tensor) -> Tensor:
        """Unweighted relation term (scalar) of two (N, C, H, W) maps."""
        loss_mse = nn.MSELoss(reduction='sum')
        context_s = self._spatial_pool(preds_S, self.conv_mask_s)
        context_t = self._spatial_pool(preds_T, self.conv_mask_t)
        out_s = preds_S + self.channel_add_conv_s(context_s)
        out_t = preds_T + self.channel_add_conv_t(context_t)
        return loss_mse(out_s, out_t) / len(out_s)
