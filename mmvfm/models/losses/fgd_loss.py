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

Mask conventions (those of the reference code):

- boxes are xyxy in input pixels, scaled to the map by ``W / size_w`` and
  ``H / size_h``, where ``size`` is ``batch_input_shape`` (the padded
  batch, ``box_scale='pad'``, default) or ``img_shape``
  (``box_scale='img_shape'``, as the reference code);
- ``x1, y1`` are floored and ``x2, y2`` ceiled; the box covers the
  inclusive rows ``y1..y2`` and columns ``x1..x2`` (clipped at the map
  edge, as slicing clips) with the weight ``1 / ((y2 + 1 - y1) *
  (x2 + 1 - x1))`` of the *unclipped* integer range, so a box whose ceiled
  ``x2`` equals W still counts ``W + 1 - x1`` columns;
- where boxes overlap the largest weight, i.e. the smallest box, wins;
- ``M_bg`` is 1 where ``M_fg`` is 0, divided by the count of such pixels
  (all zeros if there are none); an image without boxes has ``M_fg = 0``
  and ``M_bg = 1 / (H * W)``.

Departures from the reference code (each marked ``# NOTE`` below):

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
(:class:`~mmvfm.models.losses.FGDLossReference` is the oracle of the
tests):

- the masks are built for all boxes of the batch at once, by interval
  tests of rows and columns and a max over the boxes;
- ``(sqrt(S_t) sqrt(C_t) sqrt(M) diff)^2 = S_t * C_t * M * diff^2`` with
  ``diff = F_s - F_t``, so with ``P[n, hw] = sum_c C_t[n, c] * diff^2``,
  ``L_fg = sum S_t * M_fg * P / N`` and ``L_bg`` likewise;
- ``out_s - out_t = diff + delta`` with ``delta`` (N, C) the difference of
  the two ``channel_add_conv`` outputs, so
  ``L_rela = sum_{n,c} (sum_hw diff^2 + 2 delta sum_hw diff +
  H W delta^2) / N``, without ``out_s`` or ``out_t``;
- every reduction over a full map is done by two custom autograd
  functions that take the channels a cache-sized chunk at a time and write
  each map's gradient straight into one tensor: ``_MapStats`` (``sum |F|``
  over channels and over pixels, the ``conv_mask`` logits) and
  ``_PairStats`` (``P``, ``sum_hw diff``, ``sum_hw diff^2`` and the
  GcBlock contexts). ``diff`` is never stored: backward recomputes it
  chunk by chunk. Everything else works on (N, C) or (N, H * W) tensors
  with plain autograd. The submodules are kept (checkpoint keys) but
  their weights are used functionally.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import constant_init, kaiming_init
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import pad_sequence

# which meta entry the boxes are scaled by, per ``box_scale``
_BOX_SCALE_KEYS = {'pad': 'batch_input_shape', 'img_shape': 'img_shape'}
# the mask builder handles this many (image, box, pixel) cells at a time
_MASK_CHUNK = 1 << 22
# the map reductions take channels in chunks of about this many elements
_MAP_CHUNK = 1 << 19


def _box_tensor(boxes: Union[Tensor, object]) -> Tensor:
    """The (n, 4) tensor of a tensor or of an mmdet ``BaseBoxes``."""
    boxes = boxes.tensor if hasattr(boxes, 'tensor') else boxes
    if not isinstance(boxes, Tensor):
        boxes = torch.as_tensor(boxes)
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 4))
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f'gt_bboxes: each entry must be (n, 4) xyxy boxes, got shape '
            f'{tuple(boxes.shape)}'
        )
    return boxes


def _meta_hw(meta: dict, key: str, index: int) -> Tuple[float, float]:
    """``meta[key][:2]`` as (h, w); KeyError naming the key."""
    if key not in meta:
        raise KeyError(
            f'batch_img_metas[{index}] has no {key!r} (FGDLoss needs '
            f"'img_shape' and, for box_scale='pad', 'batch_input_shape')"
        )
    h, w = meta[key][:2]
    return float(h), float(w)


def _rowdot(x: Tensor, v: Tensor) -> Tensor:
    """``sum_l x[n, c, l] * v[n, l]``: x (N, C, L), v (N, L) -> (N, C).

    One matrix-vector product per image: much faster on CPU than ``bmm``
    with a (N, L, 1) operand.
    """
    return torch.stack([torch.mv(x[n], v[n]) for n in range(x.shape[0])])


def _chunks(C: int, step: int):
    """Channel slices of at most ``step`` channels covering ``range(C)``."""
    return [slice(c0, min(c0 + step, C)) for c0 in range(0, C, step)]


class _MapStats(torch.autograd.Function):
    """Reductions of one map, in a chunked pass.

    Forward, from a map x (N, C, L) and its ``conv_mask`` weight w (C,):
    ``sum_c |x|`` (N, L), ``sum_l |x|`` (N, C) and the context logits
    ``sum_c w * x`` (N, L). The absolute values are taken ``step``
    channels at a time, so that every temporary is a small, cache-sized
    chunk; no full-size tensor is made. Backward writes the gradient of x,
    ``sign(x) * (g_c[n, l] + g_l[n, c]) + w[c] * g_w[n, l]``, straight
    into one new tensor, chunk by chunk.
    """

    @staticmethod
    def forward(ctx, x, w, step):
        N, C, L = x.shape
        sum_c = x.new_zeros(N, L)
        sum_l = x.new_empty(N, C)
        for sl in _chunks(C, step):
            a = x[:, sl].abs()
            sum_c += a.sum(dim=1)
            sum_l[:, sl] = a.sum(dim=2)
        logit = torch.bmm(w.view(1, 1, C).expand(N, 1, C), x).squeeze(1)
        ctx.save_for_backward(x, w)
        ctx.step = step
        return sum_c, sum_l, logit

    @staticmethod
    @once_differentiable
    def backward(ctx, g_c, g_l, g_w):
        x, w = ctx.saved_tensors
        g_x = g_wt = None
        if ctx.needs_input_grad[0]:
            g_x = torch.empty_like(x)
            for sl in _chunks(x.shape[1], ctx.step):
                sgn = x[:, sl].sign()
                g_k = g_x[:, sl]
                torch.mul(sgn, g_c[:, None, :], out=g_k)
                g_k.addcmul_(sgn, g_l[:, sl, None])
                g_k.addcmul_(w[None, sl, None], g_w[:, None, :])
        if ctx.needs_input_grad[1]:
            g_wt = _rowdot(x, g_w).sum(dim=0)
        return g_x, g_wt, None


class _PairStats(torch.autograd.Function):
    """Reductions of ``diff = fs - ft`` and the GcBlock contexts, one
    chunked pass.

    Forward, from fs, ft (N, C, L), the teacher's channel attention c
    (N, C) and the context weights p_s, p_t (N, L):
    ``P = sum_c c * diff^2`` (N, L), ``r1 = sum_l diff`` and
    ``r2 = sum_l diff^2`` (N, C), ``ctx_s = sum_l fs * p_s`` and
    ``ctx_t = sum_l ft * p_t`` (N, C). Only fs and ft are saved; ``diff``
    is recomputed chunk by chunk in backward, where the gradient of fs,
    ``2 * diff * (c[n, c] * gP[n, l] + g_r2[n, c]) + g_r1[n, c] +
    g_cs[n, c] * p_s[n, l]``, is written into one new tensor (and that of
    ft likewise).
    """

    @staticmethod
    def forward(ctx, fs, ft, c, p_s, p_t, step):
        N, C, L = fs.shape
        P = fs.new_zeros(N, L)
        r1, r2 = fs.new_empty(N, C), fs.new_empty(N, C)
        for sl in _chunks(C, step):
            d = fs[:, sl] - ft[:, sl]
            r1[:, sl] = d.sum(dim=2)
            d.square_()
            r2[:, sl] = d.sum(dim=2)
            P += torch.bmm(c[:, None, sl], d).squeeze(1)
        ctx_s = _rowdot(fs, p_s)
        ctx_t = _rowdot(ft, p_t)
        ctx.save_for_backward(fs, ft, c, p_s, p_t)
        ctx.step = step
        return P, r1, r2, ctx_s, ctx_t

    @staticmethod
    @once_differentiable
    def backward(ctx, g_P, g_r1, g_r2, g_cs, g_ct):
        fs, ft, c, p_s, p_t = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_fs = torch.empty_like(fs) if need[0] else None
        g_ft = torch.empty_like(ft) if need[1] else None
        g_c = torch.empty_like(c) if need[2] else None
        if need[0] or need[1] or need[2]:
            c2, g_r2_2 = 2 * c, 2 * g_r2
            for sl in _chunks(fs.shape[1], ctx.step):
                d = fs[:, sl] - ft[:, sl]
                if need[0] or need[1]:
                    # grad of diff: 2 * diff * (c * g_P + g_r2) + g_r1
                    g_d = torch.baddbmm(
                        g_r2_2[:, sl, None], c2[:, sl, None], g_P[:, None, :]
                    )
                    g_d.mul_(d).add_(g_r1[:, sl, None])
                    if need[0]:
                        torch.addcmul(
                            g_d,
                            g_cs[:, sl, None],
                            p_s[:, None, :],
                            out=g_fs[:, sl],
                        )
                    if need[1]:
                        g_tk = g_ft[:, sl]
                        torch.addcmul(
                            g_d,
                            g_ct[:, sl, None],
                            p_t[:, None, :],
                            value=-1,
                            out=g_tk,
                        )
                        g_tk.neg_()
                if need[2]:
                    d.square_()
                    g_c[:, sl] = _rowdot(d, g_P)
        g_ps = torch.bmm(g_cs.unsqueeze(1), fs).squeeze(1) if need[3] else None
        g_pt = torch.bmm(g_ct.unsqueeze(1), ft).squeeze(1) if need[4] else None
        return g_fs, g_ft, g_c, g_ps, g_pt, None


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
        name (str, optional): Accepted and ignored (reference configs pass
            it).
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
        if box_scale not in _BOX_SCALE_KEYS:
            raise ValueError(
                f'box_scale must be one of {sorted(_BOX_SCALE_KEYS)}, got '
                f'{box_scale!r}'
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
        """Spatial and channel attention of a map.

        Args:
            preds (Tensor): A map, shape (N, C, H, W).

        Returns:
            tuple[Tensor, Tensor]: ``S`` (N, H, W) and ``C`` (N, C).
        """
        N, C, H, W = preds.shape
        S, Ca = self._attention(preds.reshape(N, C, H * W))
        return S.view(N, H, W), Ca

    def _attention(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``S`` (N, L) and ``C`` (N, C) of a flat map x (N, C, L), from
        one ``|x|``."""
        _, C, L = x.shape
        value = x.abs()
        spatial = torch.softmax(value.mean(dim=1) / self.temp, dim=1) * L
        channel = torch.softmax(value.mean(dim=2) / self.temp, dim=1) * C
        return spatial, channel

    def get_masks(
        self,
        gt_bboxes: Sequence[Tensor],
        batch_img_metas: List[dict],
        feat_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Foreground and background masks of a batch on a (H, W) map.

        All boxes of the batch are padded to (N, n_max, 4) and tested at
        once: a pixel is in a box if its row and column fall in the box's
        inclusive integer ranges; ``M_fg`` is the largest weight of the
        boxes covering it.

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
        H, W = int(feat_shape[-2]), int(feat_shape[-1])
        N = len(gt_bboxes)
        if len(batch_img_metas) != N:
            raise ValueError(
                f'len(batch_img_metas)={len(batch_img_metas)} != '
                f'len(gt_bboxes)={N}'
            )
        boxes = [_box_tensor(b) for b in gt_bboxes]
        if device is None:
            device = boxes[0].device if boxes else torch.device('cpu')
        # the reference scales in the boxes' dtype (float32 in practice)
        coord_dtype = (
            torch.float64
            if any(b.dtype == torch.float64 for b in boxes)
            else torch.float32
        )
        boxes = [b.to(device=device, dtype=coord_dtype) for b in boxes]
        fg = torch.zeros(N, H, W, dtype=dtype, device=device)
        n_max = max((b.shape[0] for b in boxes), default=0)
        if n_max > 0:
            fg = self._fill_fg(fg, boxes, batch_img_metas, coord_dtype)
        bg = (fg <= 0).to(dtype)
        # no background pixel: the mask stays all zero
        bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp(min=1)
        return fg, bg

    def _fill_fg(
        self,
        fg: Tensor,
        boxes: List[Tensor],
        batch_img_metas: List[dict],
        coord_dtype: torch.dtype,
    ) -> Tensor:
        """``M_fg`` (N, H, W) of the boxes (N tensors (n_i, 4))."""
        N, H, W = fg.shape
        device = fg.device
        lengths = torch.tensor([b.shape[0] for b in boxes], device=device)
        padded = pad_sequence(boxes, batch_first=True)  # (N, n_max, 4)
        n_max = padded.shape[1]
        valid = torch.arange(n_max, device=device) < lengths[:, None]
        # NOTE: all-zero rows are padding (e.g. of a fixed-size box tensor)
        # and are dropped; the reference makes each a foreground pixel
        # (0, 0) of weight 1.
        valid &= padded.ne(0).any(dim=-1)

        key = _BOX_SCALE_KEYS[self.box_scale]
        img_hw = torch.tensor(
            [
                _meta_hw(m, 'img_shape', i)
                for i, m in enumerate(batch_img_metas)
            ],
            dtype=coord_dtype,
            device=device,
        )[:, None, :]  # (N, 1, 2)
        # NOTE: box_scale='pad' (default) scales by the padded batch shape,
        # which the maps cover; the reference scales by img_shape.
        ref_hw = torch.tensor(
            [_meta_hw(m, key, i) for i, m in enumerate(batch_img_metas)],
            dtype=coord_dtype,
            device=device,
        )[:, None, :]
        # NOTE: clip to the image (a no-op for valid boxes; the reference
        # does not clip, and negative coordinates would wrap its slices).
        xs = torch.minimum(padded[..., 0::2].clamp(min=0), img_hw[..., 1:])
        ys = torch.minimum(padded[..., 1::2].clamp(min=0), img_hw[..., :1])
        # same operation order as the reference: x / size * W
        xs = xs / ref_hw[..., 1:] * W
        ys = ys / ref_hw[..., :1] * H
        x1, x2 = xs[..., 0].floor(), xs[..., 1].ceil()
        y1, y2 = ys[..., 0].floor(), ys[..., 1].ceil()
        # an empty range covers nothing (its weight may be inf or < 0)
        valid &= (x2 >= x1) & (y2 >= y1)
        area = 1.0 / (y2 + 1 - y1) / (x2 + 1 - x1)
        area = torch.where(valid, area, torch.zeros_like(area)).to(fg.dtype)

        cols = torch.arange(W, device=device, dtype=coord_dtype)
        rows = torch.arange(H, device=device, dtype=coord_dtype)
        in_x = (cols >= x1[..., None]) & (cols <= x2[..., None])
        in_y = (rows >= y1[..., None]) & (rows <= y2[..., None])
        weight_x = torch.where(in_x, area[..., None], area.new_zeros(()))
        in_y = in_y.to(fg.dtype)
        step = max(1, _MASK_CHUNK // max(1, N * H * W))
        for start in range(0, n_max, step):  # chunks bound the memory
            stop = start + step
            cover = (
                in_y[:, start:stop, :, None] * weight_x[:, start:stop, None]
            )
            fg = torch.maximum(fg, cover.amax(dim=1))
        return fg

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
        step = max(1, _MAP_CHUNK // (N * L))

        w_s, b_s = self._mask_params(self.conv_mask_s, dt)
        w_t, b_t = self._mask_params(self.conv_mask_t, dt)
        abs_s_c, abs_s_l, logit_s = _MapStats.apply(fs, w_s, step)
        abs_t_c, abs_t_l, logit_t = _MapStats.apply(ft, w_t, step)
        if not ft.requires_grad:
            # they depend on ft alone: no gradient to compute through them
            abs_t_c, abs_t_l = abs_t_c.detach(), abs_t_l.detach()
        S_s = torch.softmax(abs_s_c / (C * self.temp), dim=1) * L
        C_s = torch.softmax(abs_s_l / (L * self.temp), dim=1) * C
        S_t = torch.softmax(abs_t_c / (C * self.temp), dim=1) * L
        C_t = torch.softmax(abs_t_l / (L * self.temp), dim=1) * C
        p_s = torch.softmax(logit_s + b_s, dim=1)
        p_t = torch.softmax(logit_t + b_t, dim=1)
        # P[n, l] = sum_c C_t * diff^2, r1/r2 = sum_l diff / diff^2
        P, r1, r2, ctx_s, ctx_t = _PairStats.apply(fs, ft, C_t, p_s, p_t, step)

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
