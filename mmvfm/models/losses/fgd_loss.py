# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD: Focal and Global Distillation (Yang et al., CVPR 2022).

One :class:`FGDLoss` distils one feature level (e.g. one FPN output) of a
student detector towards its teacher. With the student map ``F_s``
(N, Cs, H, W) (first mapped to the teacher's C channels by a 1x1 conv
``align`` when Cs != C), the teacher map ``F_t`` (N, C, H, W) and the
ground-truth boxes, the loss is
``alpha_fgd * L_fg + beta_fgd * L_bg + gamma_fgd * L_at +
lambda_fgd * L_rela``:

- attention from absolute values at temperature ``temp``: spatial
  ``S(F) = H * W * softmax_hw(mean_c |F| / temp)`` (N, H, W) and channel
  ``C(F) = C * softmax_c(mean_hw |F| / temp)`` (N, C);
- focal feature terms, both weighted by the *teacher's* attention:
  ``L_fg = sum S_t * C_t * M_fg * (F_s - F_t)^2 / N`` and ``L_bg`` likewise
  with ``M_bg`` (the reference writes them with square roots of the weights
  on both maps, which is the same);
- attention term ``L_at = sum |C_s - C_t| / N + sum |S_s - S_t| / N``;
- global relation term: a GcBlock per side,
  ``out = F + channel_add_conv(sum_hw softmax_hw(conv_mask(F)) * F)``, and
  ``L_rela = sum (out_s - out_t)^2 / N``.

Sizing the weights. The paper's weights were tuned on COCO; each term
scales differently with the dataset, so they do not carry over. Per image
(the terms are divided by N), with ``d2`` the mean squared student-teacher
difference (about the teacher's squared feature magnitude at the start,
``mean |F_t|^2``, plus the student's), ``n`` boxes per image and ``s_fg``
the teacher's mean spatial attention on foreground pixels (between 1 for a
flat attention and ``H W / A_fg`` when it all sits on the ``A_fg`` box
pixels: large for small objects and for features large against ``temp``):

- ``L_fg ~ n * C * d2 * s_fg``: ``M_fg`` sums to about one per box
  (``1 / area`` each), ``C_t`` averages 1 over channels;
- ``L_bg ~ C * d2 * s_bg`` with ``s_bg <= 1``: ``M_bg`` sums to 1;
- ``L_at <= 2 (C + H W)``: both attentions average 1, so the term does not
  grow with the features but with the map (its spatial half dominates at
  fine levels);
- ``L_rela ~ C * H * W * d2``: every pixel and channel, unweighted.

To keep each term's share of the detection loss when moving to another
dataset or detector, scale ``alpha_fgd`` by ``1 / (n C d2 s_fg)``,
``beta_fgd`` by ``1 / (C d2)``, ``gamma_fgd`` by ``1 / (C + H W)`` and
``lambda_fgd`` by ``1 / (C H W d2)``, each as the ratio of the old
setting's value to the new one's. In practice measure them:
``tools/analysis_tools/fgd_loss_magnitudes.py CONFIG`` prints every raw
term, these factors and each weighted term against the detection loss on
a few training batches, and ``--target fg=R ...`` the weights that give
each term the ratio R. Keeping a share carries a tuned setting to another
dataset; it is not an optimum. On the toy set (configs/fgd/README.md) the
paper's weights make the FGD loss ~25x the detection loss and x 0.04 makes
it ~1x, yet a 3-seed sweep of the factor (0.01 / 0.04 / 0.1 / 1) found
the gain growing with it, the paper's weights best: sweep the factor.

Masks: :func:`~mmvfm.models.losses.fgd_masks.fgd_masks` (the box-mask
geometry and its conventions, those of the reference code, are described
there); :meth:`FGDLoss.get_masks` calls it with the loss's ``box_scale``.

Departures from the reference code (each marked ``# NOTE`` in the code,
the box ones in :mod:`~mmvfm.models.losses.fgd_masks`):

- boxes are scaled by ``batch_input_shape`` by default: the maps cover the
  padded batch, so scaling by ``img_shape`` (the reference) misplaces the
  boxes of any image smaller than its batch; ``box_scale='img_shape'``
  reproduces the reference;
- boxes are clipped to the image first (a no-op for valid boxes) and
  all-zero rows are dropped as padding (the reference turns each into a
  foreground pixel (0, 0) of weight 1);
- half and bfloat16 inputs are computed in float32 with autocast off, so
  that the sums over whole maps stay finite and accurate.

The computation is rearranged for speed, with the reference's values
(:class:`mmvfm.testing.FGDLossReference` is the oracle of the tests):

- the masks are built for all boxes of the batch at once, by interval
  tests of rows and columns and a max over the boxes;
- ``(sqrt(S_t) sqrt(C_t) sqrt(M) diff)^2 = S_t * C_t * M * diff^2`` with
  ``diff = F_s - F_t``, so with ``P[n, hw] = sum_c C_t[n, c] * diff^2``,
  ``L_fg = sum S_t * M_fg * P / N`` and ``L_bg`` likewise;
- ``out_s - out_t = diff + delta`` with ``delta`` (N, C) the difference of
  the two ``channel_add_conv`` outputs, so
  ``L_rela = sum_{n,c} (sum_hw diff^2 + 2 delta sum_hw diff +
  H W delta^2) / N``, without ``out_s`` or ``out_t``;
- every reduction over a full map is done by the two chunked autograd ops
  of :mod:`mmvfm.ops.fgd_reductions`, which take the channels a
  cache-sized chunk at a time and write each map's gradient straight into
  one tensor: :func:`~mmvfm.ops.fgd_map_stats` (``sum |F|`` over channels
  and over pixels, the ``conv_mask`` logits) and
  :func:`~mmvfm.ops.fgd_pair_stats` (``P``, ``sum_hw diff``,
  ``sum_hw diff^2`` and the GcBlock contexts). ``diff`` is never stored:
  backward recomputes it chunk by chunk. Everything else works on (N, C)
  or (N, H * W) tensors with plain autograd. The submodules are kept
  (checkpoint keys) but their weights are used functionally;
- both attentions come from those sums through one function,
  :func:`fgd_attention` (``mean_c |F| / temp`` is computed as
  ``sum_c |F| / (C * temp)``), used by the forward and by
  :meth:`FGDLoss.get_attention` alike.
"""

import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import constant_init, kaiming_init
from torch import Tensor

from mmvfm.ops import fgd_map_stats, fgd_pair_stats

from .fgd_masks import BOX_SCALE_KEYS, fgd_masks

# the map reductions take channels in chunks of about this many elements
# (read at each call: tests set it to 1 to take one channel at a time)
_MAP_CHUNK = 1 << 19


def _map_step(N: int, L: int) -> int:
    """Channels per chunk of the map reductions for N maps of L pixels."""
    return max(1, _MAP_CHUNK // (N * L))


def fgd_attention(
    sum_c: Tensor, sum_l: Tensor, temp: float
) -> Tuple[Tensor, Tensor]:
    """FGD's spatial and channel attention from the sums of ``|F|``.

    ``S = L * softmax_l(mean_c |F| / temp)`` and
    ``C = C * softmax_c(mean_l |F| / temp)``, with the means computed as
    ``sum / (count * temp)`` (the form :class:`FGDLoss` has always used;
    ``mean / temp`` differs from it by rounding only).

    Args:
        sum_c (Tensor): ``sum_c |F|``, (N, L) with ``L = H * W``.
        sum_l (Tensor): ``sum_l |F|``, (N, C).
        temp (float): The temperature.

    Returns:
        tuple[Tensor, Tensor]: ``S`` (N, L) and ``C`` (N, C).
    """
    L, C = sum_c.shape[1], sum_l.shape[1]
    spatial = torch.softmax(sum_c / (C * temp), dim=1) * L
    channel = torch.softmax(sum_l / (L * temp), dim=1) * C
    return spatial, channel


@MODELS.register_module()
class FGDLoss(nn.Module):
    """Focal and Global Distillation loss for one feature level.

    Args:
        student_channels (int): Channels Cs of the student map.
        teacher_channels (int): Channels C of the teacher map (>= 2).
        temp (float): Attention temperature (> 0). Defaults to 0.5.
        alpha_fgd (float): Weight of the foreground term. Defaults to 1e-3.
        beta_fgd (float): Weight of the background term. Defaults to 5e-4.
        gamma_fgd (float): Weight of the attention term. Defaults to 1e-3.
        lambda_fgd (float): Weight of the relation term. Defaults to 5e-6.
        box_scale (str): Scale boxes to the map by ``'pad'``
            (``batch_input_shape``, default) or ``'img_shape'`` (the
            reference code).
        name (str, optional): Deprecated and ignored: the distiller keys
            each loss by its name in ``distill_losses`` (e.g.
            ``'loss_fgd_fpn_0'``). The reference configs (mmrazor style)
            pass it; a DeprecationWarning says so.
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
        box_scale: str = 'pad',
        name: Optional[str] = None,
    ) -> None:
        super().__init__()
        for arg, value, low in (
            ('student_channels', student_channels, 1),
            ('teacher_channels', teacher_channels, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f'{arg} must be an int, got {value!r}')
            if value < low:
                raise ValueError(f'{arg} must be >= {low}, got {value}')
        if not temp > 0:
            raise ValueError(f'temp must be > 0, got {temp!r}')
        for arg, value in (
            ('alpha_fgd', alpha_fgd),
            ('beta_fgd', beta_fgd),
            ('gamma_fgd', gamma_fgd),
            ('lambda_fgd', lambda_fgd),
        ):
            if not value >= 0:
                raise ValueError(f'{arg} must be >= 0, got {value!r}')
        if box_scale not in BOX_SCALE_KEYS:
            raise ValueError(
                f'box_scale must be one of {sorted(BOX_SCALE_KEYS)}, got '
                f'{box_scale!r}'
            )
        if name is not None:
            warnings.warn(
                f'{type(self).__name__}(name={name!r}): `name` is '
                'deprecated and ignored; the distiller names each loss by '
                'its key in `distill_losses`. Drop it from the config.',
                DeprecationWarning,
                stacklevel=2,
            )
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.temp = float(temp)
        self.alpha_fgd = float(alpha_fgd)
        self.beta_fgd = float(beta_fgd)
        self.gamma_fgd = float(gamma_fgd)
        self.lambda_fgd = float(lambda_fgd)
        self.box_scale = box_scale

        C = teacher_channels
        if student_channels != teacher_channels:
            self.align = nn.Conv2d(student_channels, C, kernel_size=1)
        else:
            self.align = None
        self.conv_mask_s = nn.Conv2d(C, 1, kernel_size=1)
        self.conv_mask_t = nn.Conv2d(C, 1, kernel_size=1)
        self.channel_add_conv_s = self._channel_add_block(C)
        self.channel_add_conv_t = self._channel_add_block(C)
        self.reset_parameters()

    @staticmethod
    def _channel_add_block(C: int) -> nn.Sequential:
        """The GcBlock transform C -> C // 2 -> C on (N, C, 1, 1)."""
        return nn.Sequential(
            nn.Conv2d(C, C // 2, kernel_size=1),
            nn.LayerNorm([C // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, kernel_size=1),
        )

    def reset_parameters(self) -> None:
        """Kaiming (fan_in) ``conv_mask_*``, zero last conv of
        ``channel_add_conv_*``; ``align`` keeps PyTorch's default."""
        kaiming_init(self.conv_mask_s, mode='fan_in')
        kaiming_init(self.conv_mask_t, mode='fan_in')
        constant_init(self.channel_add_conv_s[-1], val=0)
        constant_init(self.channel_add_conv_t[-1], val=0)

    # ------------------------------------------------------------------
    def get_attention(self, preds: Tensor) -> Tuple[Tensor, Tensor]:
        """Spatial and channel attention of a map, as the forward computes
        them (:func:`fgd_attention` of :func:`~mmvfm.ops.fgd_map_stats`).

        Args:
            preds (Tensor): A map, shape (N, C, H, W).

        Returns:
            tuple[Tensor, Tensor]: ``S`` (N, H, W) and ``C`` (N, C).
        """
        N, C, H, W = preds.shape
        x = preds.reshape(N, C, H * W)
        # the logits (third output) are not needed: a zero weight
        sum_c, sum_l, _ = fgd_map_stats(x, x.new_zeros(C), _map_step(N, H * W))
        S, Ca = fgd_attention(sum_c, sum_l, self.temp)
        return S.view(N, H, W), Ca

    def get_masks(
        self,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
        feat_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Foreground and background masks of a batch on a (H, W) map:
        :func:`~mmvfm.models.losses.fgd_masks.fgd_masks` with this loss's
        ``box_scale``.

        Args:
            gt_bboxes (Sequence[Tensor]): N tensors (n_i, 4) (or mmdet
                ``HorizontalBoxes``), xyxy in input pixels.
            batch_img_metas (list[dict]): N metas with ``'img_shape'``
                (h, w) and, for ``box_scale='pad'``, ``'batch_input_shape'``
                (h, w).
            feat_shape (Sequence[int]): (H, W) of the map (or any shape
                ending with them).
            dtype (torch.dtype): Dtype of the masks. Defaults to float32.
            device (str | torch.device, optional): Device of the masks;
                that of the boxes if None.

        Returns:
            tuple[Tensor, Tensor]: ``M_fg`` and ``M_bg``, each (N, H, W).
        """
        return fgd_masks(
            gt_bboxes,
            batch_img_metas,
            feat_shape,
            box_scale=self.box_scale,
            dtype=dtype,
            device=device,
        )

    # ------------------------------------------------------------------
    def _check_inputs(
        self,
        preds_S: Tensor,
        preds_T: Tensor,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
    ) -> None:
        if preds_S.dim() != 4 or preds_T.dim() != 4:
            raise ValueError(
                'preds_S and preds_T must be (N, C, H, W), got preds_S '
                f'{tuple(preds_S.shape)} and preds_T {tuple(preds_T.shape)}'
            )
        if preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError(
                'preds_S and preds_T must have the same spatial size, got '
                f'preds_S {tuple(preds_S.shape)} and preds_T '
                f'{tuple(preds_T.shape)}'
            )
        if preds_S.shape[0] != preds_T.shape[0]:
            raise ValueError(
                'preds_S and preds_T must have the same batch size, got '
                f'preds_S {tuple(preds_S.shape)} and preds_T '
                f'{tuple(preds_T.shape)}'
            )
        if preds_S.shape[1] != self.student_channels:
            raise ValueError(
                f'preds_S has {preds_S.shape[1]} channels (shape '
                f'{tuple(preds_S.shape)}) but student_channels='
                f'{self.student_channels}'
            )
        if preds_T.shape[1] != self.teacher_channels:
            raise ValueError(
                f'preds_T has {preds_T.shape[1]} channels (shape '
                f'{tuple(preds_T.shape)}) but teacher_channels='
                f'{self.teacher_channels}'
            )
        N = preds_S.shape[0]
        if N == 0:
            raise ValueError('preds_S and preds_T have an empty batch')
        if len(gt_bboxes) != N:
            raise ValueError(
                f'len(gt_bboxes)={len(gt_bboxes)} != batch size {N}'
            )
        if len(batch_img_metas) != N:
            raise ValueError(
                f'len(batch_img_metas)={len(batch_img_metas)} != batch '
                f'size {N}'
            )

    def forward(
        self,
        preds_S: Tensor,
        preds_T: Tensor,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
        return_terms: bool = False,
    ) -> Union[Tensor, Dict[str, Tensor]]:
        """The weighted FGD loss of one level.

        Args:
            preds_S (Tensor): Student map, shape (N, Cs, H, W).
            preds_T (Tensor): Teacher map, shape (N, C, H, W).
            gt_bboxes (Sequence[Tensor]): N tensors (n_i, 4) (or mmdet
                ``HorizontalBoxes``), xyxy in input pixels; all-zero rows
                are ignored.
            batch_img_metas (list[dict]): N metas with ``'img_shape'`` and,
                for ``box_scale='pad'``, ``'batch_input_shape'``.
            return_terms (bool): Return the four weighted terms instead of
                their sum.

        Returns:
            Tensor | dict: The scalar loss, or ``dict(fg=, bg=, at=,
            rela=)`` of the weighted terms, which sum to it.
        """
        self._check_inputs(preds_S, preds_T, gt_bboxes, batch_img_metas)
        dtype = preds_S.dtype
        # NOTE: half inputs are computed in float32 (the reference computes
        # in the input dtype); float64 stays float64.
        if dtype in (torch.float16, torch.bfloat16) or not (
            dtype.is_floating_point
        ):
            dtype = torch.float32
        with torch.autocast(device_type=preds_S.device.type, enabled=False):
            terms = self._terms(
                preds_S.to(dtype),
                preds_T.to(dtype),
                gt_bboxes,
                batch_img_metas,
            )
        if return_terms:
            return terms
        return terms['fg'] + terms['bg'] + terms['at'] + terms['rela']

    @staticmethod
    def _param(p: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
        return None if p is None else p.to(dtype)

    def _channel_add(self, block: nn.Sequential, context: Tensor) -> Tensor:
        """``block`` applied to contexts (N, C) -> (N, C), functionally (so
        it computes in the dtype of ``context``)."""
        conv1, norm, _, conv2 = block
        dt = context.dtype
        x = F.linear(
            context,
            conv1.weight.flatten(1).to(dt),
            self._param(conv1.bias, dt),
        )
        x = F.layer_norm(
            x,
            x.shape[1:],
            self._param(norm.weight, dt).flatten(),
            self._param(norm.bias, dt).flatten(),
            norm.eps,
        )
        x = F.relu(x)
        return F.linear(
            x, conv2.weight.flatten(1).to(dt), self._param(conv2.bias, dt)
        )

    @staticmethod
    def _mask_params(
        conv_mask: nn.Conv2d, dtype: torch.dtype
    ) -> Tuple[Tensor, Union[Tensor, float]]:
        """``conv_mask``'s weight as (C,) and bias (a (1,) tensor or 0)."""
        weight = conv_mask.weight.to(dtype).view(-1)
        bias = 0.0 if conv_mask.bias is None else conv_mask.bias.to(dtype)
        return weight, bias

    def _terms(
        self,
        preds_S: Tensor,
        preds_T: Tensor,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
    ) -> Dict[str, Tensor]:
        """The four weighted terms from maps in the compute dtype."""
        dt = preds_S.dtype
        if self.align is not None:
            preds_S = F.conv2d(
                preds_S,
                self.align.weight.to(dt),
                self._param(self.align.bias, dt),
            )
        N, C, H, W = preds_T.shape
        L = H * W
        fs = preds_S.reshape(N, C, L)
        ft = preds_T.reshape(N, C, L)
        step = _map_step(N, L)

        w_s, b_s = self._mask_params(self.conv_mask_s, dt)
        w_t, b_t = self._mask_params(self.conv_mask_t, dt)
        # [N, C, L] -> sum_c |F| [N, L], sum_l |F| [N, C], logits [N, L]
        abs_s_c, abs_s_l, logit_s = fgd_map_stats(fs, w_s, step)
        abs_t_c, abs_t_l, logit_t = fgd_map_stats(ft, w_t, step)
        if not ft.requires_grad:
            # they depend on ft alone: no gradient to compute through them
            abs_t_c, abs_t_l = abs_t_c.detach(), abs_t_l.detach()
        S_s, C_s = fgd_attention(abs_s_c, abs_s_l, self.temp)
        S_t, C_t = fgd_attention(abs_t_c, abs_t_l, self.temp)
        p_s = torch.softmax(logit_s + b_s, dim=1)
        p_t = torch.softmax(logit_t + b_t, dim=1)
        # P[n, l] = sum_c C_t * diff^2, r1/r2 = sum_l diff / diff^2
        P, r1, r2, ctx_s, ctx_t = fgd_pair_stats(fs, ft, C_t, p_s, p_t, step)

        fg, bg = self.get_masks(
            gt_bboxes, batch_img_metas, (H, W), dtype=dt, device=fs.device
        )
        weighted = S_t * P
        loss_fg = (weighted * fg.view(N, L)).sum() / N
        loss_bg = (weighted * bg.view(N, L)).sum() / N

        loss_at = (C_s - C_t).abs().sum() / N + (S_s - S_t).abs().sum() / N

        delta = self._channel_add(
            self.channel_add_conv_s, ctx_s
        ) - self._channel_add(self.channel_add_conv_t, ctx_t)
        # sum_l (diff + delta)^2 per (n, c)
        loss_rela = (r2 + 2 * delta * r1 + L * delta * delta).sum() / N
        return dict(
            fg=self.alpha_fgd * loss_fg,
            bg=self.beta_fgd * loss_bg,
            at=self.gamma_fgd * loss_at,
            rela=self.lambda_fgd * loss_rela,
        )
