# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD's foreground and background masks: ground-truth boxes on a map.

:func:`fgd_masks` builds, for a batch of N images and one (H, W) feature
map, ``M_fg`` and ``M_bg`` (N, H, W) with the conventions of the reference
code (yzd-v/FGD), vectorised over all boxes of the batch:

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

Departures from the reference code (each marked ``# NOTE`` below): the
default ``box_scale='pad'``; boxes clipped to the image first; all-zero
rows dropped as padding. See :mod:`mmvfm.models.losses.fgd_loss`.
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

# which meta entry the boxes are scaled by, per ``box_scale``
BOX_SCALE_KEYS = {'pad': 'batch_input_shape', 'img_shape': 'img_shape'}
# the mask builder handles this many (image, box, pixel) cells at a time
_MASK_CHUNK = 1 << 22


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


def fgd_masks(
    gt_bboxes: Sequence[Tensor],
    batch_img_metas: List[dict],
    feat_shape: Sequence[int],
    box_scale: str = 'pad',
    dtype: torch.dtype = torch.float32,
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[Tensor, Tensor]:
    """Foreground and background masks of a batch on a (H, W) map.

    All boxes of the batch are padded to (N, n_max, 4) and tested at
    once: a pixel is in a box if its row and column fall in the box's
    inclusive integer ranges; ``M_fg`` is the largest weight of the boxes
    covering it.

    Args:
        gt_bboxes (Sequence[Tensor]): N tensors (n_i, 4) (or mmdet
            ``HorizontalBoxes``), xyxy in input pixels; all-zero rows are
            ignored.
        batch_img_metas (list[dict]): N metas with ``'img_shape'`` (h, w)
            and, for ``box_scale='pad'``, ``'batch_input_shape'`` (h, w).
        feat_shape (Sequence[int]): (H, W) of the map (or any shape ending
            with them).
        box_scale (str): ``'pad'`` (scale by ``batch_input_shape``,
            default) or ``'img_shape'`` (the reference code).
        dtype (torch.dtype): Dtype of the masks. Defaults to float32.
        device (str | torch.device, optional): Device of the masks; that
            of the boxes if None.

    Returns:
        tuple[Tensor, Tensor]: ``M_fg`` and ``M_bg``, each (N, H, W).
    """
    if box_scale not in BOX_SCALE_KEYS:
        raise ValueError(
            f'box_scale must be one of {sorted(BOX_SCALE_KEYS)}, got '
            f'{box_scale!r}'
        )
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
        fg = _fill_fg(fg, boxes, batch_img_metas, coord_dtype, box_scale)
    bg = (fg <= 0).to(dtype)
    # no background pixel: the mask stays all zero
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp(min=1)
    return fg, bg


def _fill_fg(
    fg: Tensor,
    boxes: List[Tensor],
    batch_img_metas: List[dict],
    coord_dtype: torch.dtype,
    box_scale: str,
) -> Tensor:
    """``M_fg`` (N, H, W) of the boxes (N tensors (n_i, 4) of
    ``coord_dtype`` on ``fg``'s device), from the zeros ``fg``."""
    N, H, W = fg.shape
    device = fg.device
    lengths = torch.tensor([b.shape[0] for b in boxes], device=device)
    padded = pad_sequence(boxes, batch_first=True)  # [N, n_max, 4]
    n_max = padded.shape[1]
    valid = torch.arange(n_max, device=device) < lengths[:, None]
    # NOTE: all-zero rows are padding (e.g. of a fixed-size box tensor)
    # and are dropped; the reference makes each a foreground pixel
    # (0, 0) of weight 1.
    valid &= padded.ne(0).any(dim=-1)

    key = BOX_SCALE_KEYS[box_scale]
    img_hw = torch.tensor(
        [_meta_hw(m, 'img_shape', i) for i, m in enumerate(batch_img_metas)],
        dtype=coord_dtype,
        device=device,
    )[:, None, :]  # [N, 1, 2]
    # NOTE: box_scale='pad' (default) scales by the padded batch shape,
    # which the maps cover; the reference scales by img_shape.
    ref_hw = torch.tensor(
        [_meta_hw(m, key, i) for i, m in enumerate(batch_img_metas)],
        dtype=coord_dtype,
        device=device,
    )[:, None, :]  # [N, 1, 2]
    # NOTE: clip to the image (a no-op for valid boxes; the reference
    # does not clip, and negative coordinates would wrap its slices).
    xs = torch.minimum(padded[..., 0::2].clamp(min=0), img_hw[..., 1:])
    ys = torch.minimum(padded[..., 1::2].clamp(min=0), img_hw[..., :1])
    # same operation order as the reference: x / size * W
    xs = xs / ref_hw[..., 1:] * W  # [N, n_max, 2]
    ys = ys / ref_hw[..., :1] * H
    x1, x2 = xs[..., 0].floor(), xs[..., 1].ceil()  # [N, n_max]
    y1, y2 = ys[..., 0].floor(), ys[..., 1].ceil()
    # an empty range covers nothing (its weight may be inf or < 0)
    valid &= (x2 >= x1) & (y2 >= y1)
    area = 1.0 / (y2 + 1 - y1) / (x2 + 1 - x1)
    area = torch.where(valid, area, torch.zeros_like(area)).to(fg.dtype)

    cols = torch.arange(W, device=device, dtype=coord_dtype)
    rows = torch.arange(H, device=device, dtype=coord_dtype)
    in_x = (cols >= x1[..., None]) & (cols <= x2[..., None])  # [N, n, W]
    in_y = (rows >= y1[..., None]) & (rows <= y2[..., None])  # [N, n, H]
    weight_x = torch.where(in_x, area[..., None], area.new_zeros(()))
    in_y = in_y.to(fg.dtype)
    step = max(1, _MASK_CHUNK // max(1, N * H * W))
    for start in range(0, n_max, step):  # chunks bound the memory
        stop = start + step
        # [N, k, H, 1] * [N, k, 1, W] -> [N, k, H, W]
        cover = in_y[:, start:stop, :, None] * weight_x[:, start:stop, None]
        fg = torch.maximum(fg, cover.amax(dim=1))
    return fg
