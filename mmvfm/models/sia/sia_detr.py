# Copyright (c) mmvfm contributors. All rights reserved.
"""SiADETR: a multi-scale DETR whose decoder attends densely to every
level, with SiA attention-map fusion.

mmdet's multi-scale DETRs (Deformable DETR, DINO) sample a few points per
level and have no dense attention map to fuse, so SiA gets its own
detector, built on mmdet's :class:`~mmdet.models.DETR` chain
(``pre_transformer -> forward_encoder -> pre_decoder -> forward_decoder ->
DETRHead``):

- neck: :class:`SiAFusionNeck`, L levels (B, C, h_l, w_l) coarse to fine,
  each exactly twice the previous;
- encoder (mmdet's ``DetrTransformerEncoder``, optional): self-attention
  over the **coarsest level only**. Dense self-attention over a finer
  level costs (h w)^2 per head (16800^2 at stride 8 for a 1333x800
  image), which is what deformable attention exists to avoid; the finer
  levels reach the decoder straight from the neck;
- memory: the encoded coarsest level followed by the finer levels,
  flattened coarse to fine (B, sum_l h_l w_l, C); key positions are the
  sine encoding of each level (normalised to the image, so that the
  levels agree on where a cell is; ``offset=-0.5`` in our configs puts
  the position at the cell centre, which makes a coarse cell's position
  the mean of its children's) plus a learned level embedding (L, C)
  shared by all decoder layers;
- decoder (:class:`SiATransformerDecoder`): mmdet's DETR decoder layers
  (self-attention, cross-attention, FFN, post-norm) with
  :class:`SiAMultiScaleAttention` as the cross-attention; its ``fusion``
  switches SiA (``'prob'``, ``'logit'``) or plain dense multi-scale
  attention (None), nothing else changes;
- queries as in DETR: learned ``query_pos``, zero content; head: mmdet's
  ``DETRHead``.

Padding: each level's key padding mask has ``ceil(img_h / s_l)`` valid
rows and ``ceil(img_w / s_l)`` valid columns, ``s_l`` the level's stride
(the rule of DETR's nearest downsampling of the image mask), which keeps
the masks of consecutive levels consistent as the op requires. Masks are
built only when some image of the batch is padded. The batch must be a
multiple of the coarsest stride: ``pad_size_divisor`` of the data
preprocessor a multiple of it (ValueError otherwise).
"""

import inspect
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.detectors import DETR
from mmdet.models.layers import (
    MLP,
    DetrTransformerDecoder,
    DetrTransformerDecoderLayer,
    DetrTransformerEncoder,
    SinePositionalEncoding,
)
from mmdet.models.layers.transformer import (
    coordinate_to_encoding,
    inverse_sigmoid,
)
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from mmengine.model import ModuleList
from torch import Tensor

from .sia_attention import SiAMultiScaleAttention


class SiATransformerDecoderLayer(DetrTransformerDecoderLayer):
    """mmdet's DETR decoder layer with :class:`SiAMultiScaleAttention` as
    the cross-attention (``cross_attn_cfg`` holds its arguments)."""

    def _init_layers(self) -> None:
        """Self-attention, SiA cross-attention, FFN and 3 norms, as the
        parent builds them."""
        self.self_attn = MultiheadAttention(**self.self_attn_cfg)
        self.cross_attn = SiAMultiScaleAttention(**self.cross_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        if self.cross_attn.embed_dims != self.embed_dims:
            raise ValueError(
                f'cross_attn_cfg.embed_dims ({self.cross_attn.embed_dims}) '
                f'must equal self_attn_cfg.embed_dims ({self.embed_dims})'
            )
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList(
            build_norm_layer(self.norm_cfg, self.embed_dims)[1]
            for _ in range(3)
        )


class SiATransformerDecoder(DetrTransformerDecoder):
    """mmdet's DETR decoder made of :class:`SiATransformerDecoderLayer`;
    ``spatial_shapes`` is passed to the layers as a keyword.

    With ``reg_branches`` (:meth:`forward`) it refines a reference box per
    layer, as mmdet's Deformable DETR decoder does with box refinement.
    """

    def _init_layers(self) -> None:
        self.layers = ModuleList(
            SiATransformerDecoderLayer(**self.layer_cfg)
            for _ in range(self.num_layers)
        )
        self.embed_dims = self.layers[0].embed_dims
        _, self.post_norm = build_norm_layer(
            self.post_norm_cfg, self.embed_dims
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor,
        key_pos: Tensor,
        key_padding_mask: Optional[Tensor],
        reference_points: Optional[Tensor] = None,
        reg_branches: Optional[nn.ModuleList] = None,
        encode_points: Optional[Callable[[Tensor], Tensor]] = None,
        **kwargs,
    ):
        """Without ``reg_branches``: mmdet's DETR decoder, hidden states
        (num_layers, B, Nq, C) (or (1, B, Nq, C)).

        With ``reg_branches`` (one per layer) and ``reference_points``
        (B, Nq, 2), normalised (cx, cy): box refinement. Layer ``l`` gets
        the query position ``query_pos + sine(ref_l)`` (and
        ``query_sine_pos = sine(ref_l)``), the sine encoding of its
        reference centre; after it, ``ref_{l+1} = sigmoid(reg_l(h_l) +
        inverse_sigmoid(ref_l))`` (on (cx, cy) only while ``ref_l`` is a
        point, on the box after), detached, ``h_l`` the post-normed hidden
        state the head sees, so ``ref_{l+1}`` is layer ``l``'s box.
        ``encode_points`` (required with them) maps (B, Nq, 2) centres to
        their sine encoding (B, Nq, C), the keys' own
        (``SiADETR.encode_points``).

        Returns:
            Tensor | tuple[Tensor, Tensor]: without ``reg_branches`` the
            hidden states; with them, the hidden states
            (num_layers, B, Nq, C) and the refined references
            (num_layers, B, Nq, 4), ``ref_1 ... ref_L``.
        """
        if reg_branches is None:
            return super().forward(
                query,
                key,
                value,
                query_pos,
                key_pos,
                key_padding_mask,
                **kwargs,
            )
        if (
            reference_points is None
            or encode_points is None
            or not self.return_intermediate
        ):
            raise ValueError(
                'SiATransformerDecoder: box refinement (reg_branches) needs '
                'reference_points, encode_points and return_intermediate=True'
            )
        if len(reg_branches) != self.num_layers:
            raise ValueError(
                f'SiATransformerDecoder: {len(reg_branches)} reg_branches '
                f'for {self.num_layers} layers'
            )
        ref = reference_points
        states, refs = [], []
        for layer, reg_branch in zip(self.layers, reg_branches):
            sine = encode_points(ref[..., :2])
            query = layer(
                query,
                key=key,
                value=value,
                query_pos=query_pos + sine,
                key_pos=key_pos,
                key_padding_mask=key_padding_mask,
                query_sine_pos=sine,
                **kwargs,
            )
            state = self.post_norm(query)
            delta = reg_branch(state)  # [B, Nq, 4]
            if ref.shape[-1] == 4:
                new_ref = delta + inverse_sigmoid(ref)
            else:
                new_ref = torch.cat(
                    [delta[..., :2] + inverse_sigmoid(ref), delta[..., 2:]],
                    -1,
                )
            ref = new_ref.sigmoid().detach()
            states.append(state)
            refs.append(ref)
        return torch.stack(states), torch.stack(refs)


@MODELS.register_module()
class SiADETR(DETR):
    """Multi-scale DETR with dense cross-attention and SiA fusion.

    Takes the arguments of :class:`~mmdet.models.DETR`; ``encoder`` may
    be None (no encoder); ``decoder`` configures a
    :class:`SiATransformerDecoder` whose ``layer_cfg.cross_attn_cfg``
    holds the :class:`SiAMultiScaleAttention` arguments (``num_levels``
    must match the neck's levels).

    Args:
        with_reference (bool): Conditional-DETR-style reference points
            (a departure from plain DETR, off by default): each query
            gets a point ``ref = sigmoid(MLP(query_pos))`` (B, Nq, 2); the
            decoder's query position becomes ``query_pos +
            sine(ref)``, the sine encoding of the keys' own positional
            encoding (so a query's position is comparable with the cells'
            positions), and the head (``ConditionalDETRHead``) predicts
            boxes relative to ``ref``. Plain DETR's absolute boxes from a
            learned embedding barely learn from scratch in a CPU-sized
            schedule; the reference gives every query a spatial anchor.
            The encoding is also handed to the cross-attention as
            ``query_sine_pos`` (used by ``spatial_query=True``).
        with_box_refine (bool): iterative box refinement (a departure
            from the paper, off by default; needs ``with_reference``), as
            mmdet's Deformable DETR with ``with_box_refine``: each layer's
            box, detached, is the next layer's reference, whose centre
            gives that layer's query position and spatial query (see
            :meth:`SiATransformerDecoder.forward`); the head is mmdet's
            ``DeformableDETRHead`` with one unshared branch per decoder
            layer (``share_pred_layer=False``, ``num_pred_layer`` =
            decoder layers). Dense attention from a fixed reference learns
            slowly from scratch; the refined reference lets each layer
            attend around the box the previous layer found.
    """

    def __init__(
        self,
        *args,
        with_reference: bool = False,
        with_box_refine: bool = False,
        **kwargs,
    ):
        self.with_reference = bool(with_reference)
        self.with_box_refine = bool(with_box_refine)
        if self.with_box_refine and not self.with_reference:
            raise ValueError(
                'SiADETR: with_box_refine=True needs with_reference=True '
                '(the refined boxes are the reference points)'
            )
        super().__init__(*args, **kwargs)
        if self.with_box_refine:
            head = self.bbox_head
            branches = getattr(head, 'reg_branches', None)
            num_layers = self.decoder.num_layers
            if (
                branches is None
                or getattr(head, 'share_pred_layer', True)
                or getattr(head, 'as_two_stage', False)
                or len(branches) != num_layers
            ):
                raise ValueError(
                    'SiADETR: with_box_refine=True needs a head with one '
                    'unshared regression branch per decoder layer, e.g. '
                    "bbox_head=dict(type='DeformableDETRHead', "
                    f'share_pred_layer=False, num_pred_layer={num_layers}, '
                    f'as_two_stage=False), got {type(head).__name__} '
                    f'(share_pred_layer='
                    f'{getattr(head, "share_pred_layer", None)}, '
                    f'num_pred_layer={getattr(head, "num_pred_layer", None)})'
                )
        if self.with_reference:
            params = inspect.signature(self.bbox_head.loss).parameters
            if 'references' not in params:
                raise ValueError(
                    'SiADETR: with_reference=True needs a head that takes '
                    'references (e.g. ConditionalDETRHead), got '
                    f'{type(self.bbox_head).__name__}'
                )

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding
        )
        if self.encoder is not None:
            self.encoder = DetrTransformerEncoder(**self.encoder)
        self.decoder = SiATransformerDecoder(**self.decoder)
        self.embed_dims = self.decoder.embed_dims
        self.num_levels = self.decoder.layers[0].cross_attn.num_levels
        if self.encoder is not None and (
            self.encoder.embed_dims != self.embed_dims
        ):
            raise ValueError(
                f'encoder embed_dims ({self.encoder.embed_dims}) must equal '
                f"the decoder's ({self.embed_dims})"
            )
        num_feats = self.positional_encoding.num_feats
        if 2 * num_feats != self.embed_dims:
            raise ValueError(
                f'positional_encoding.num_feats ({num_feats}) must be half '
                f'of embed_dims ({self.embed_dims})'
            )
        if self.with_reference and not self.positional_encoding.normalize:
            raise ValueError(
                'SiADETR: with_reference=True needs '
                'positional_encoding.normalize=True (reference points are '
                "normalised; their encoding must match the keys')"
            )
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        self.level_embed = nn.Parameter(
            torch.zeros(self.num_levels, self.embed_dims)
        )
        if self.with_reference:
            self.ref_point_head = MLP(self.embed_dims, self.embed_dims, 2, 2)

    def encode_points(self, points: Tensor) -> Tensor:
        """The sine encoding of normalised (cx, cy) points (B, Nq, 2) in
        the keys' own encoding (B, Nq, C): the positional encoding's
        temperature and scale (normalised coordinates times ``scale``),
        [y, x] halves, so that ``encode_points(p) . key_pos`` is a sum of
        cosines of the distance between ``p`` and each cell."""
        pe = self.positional_encoding
        return coordinate_to_encoding(
            points,
            num_feats=pe.num_feats,
            temperature=pe.temperature,
            scale=pe.scale,
        )

    def init_weights(self) -> None:
        """DETR's init (xavier on every 2-D encoder/decoder parameter),
        then the level embedding and the fusion weights ``w``."""
        # NOTE DETR.init_weights assumes an encoder; ours is optional
        super(DETR, self).init_weights()
        for coder in (self.encoder, self.decoder):
            if coder is not None:
                for p in coder.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)
        nn.init.normal_(self.level_embed)
        for module in self.decoder.modules():
            if isinstance(module, SiAMultiScaleAttention):
                module.reset_fusion()
                module.reset_spatial()

    def _coarsest_stride(
        self, batch_hw: Tuple[int, int], coarse_hw: Tuple[int, int]
    ) -> int:
        """The coarsest level's stride; ValueError unless the batch is a
        multiple of it in both directions and ``pad_size_divisor`` makes
        it so for every batch."""
        (H, W), (h, w) = batch_hw, coarse_hw
        stride = H // h
        divisor = getattr(self.data_preprocessor, 'pad_size_divisor', None)
        if (
            H % h
            or W % w
            or W // w != stride
            or (divisor is not None and divisor % stride)
        ):
            raise ValueError(
                f'SiADETR: the batch ({H}x{W}) must be padded to a multiple '
                f'of the coarsest stride (coarsest level {h}x{w}): set '
                f'data_preprocessor.pad_size_divisor (now {divisor}) to a '
                f'multiple of it, e.g. 32 for ResNet C3-C5'
            )
        return stride

    def padding_masks(
        self,
        shapes: Sequence[Tuple[int, int]],
        batch_data_samples: OptSampleList,
        device: torch.device,
    ) -> Optional[List[Tensor]]:
        """Per-level key padding masks (B, h_l, w_l), True at padded
        cells, or None when no image of the batch is padded."""
        if batch_data_samples is None:
            return None
        H, W = batch_data_samples[0].batch_input_shape
        stride = self._coarsest_stride((H, W), shapes[0])
        img_shapes = [s.img_shape[:2] for s in batch_data_samples]
        if all(tuple(s) == (H, W) for s in img_shapes):
            return None
        img = torch.tensor(img_shapes, device=device)  # [B, 2]: h, w
        masks = []
        for lvl, (h, w) in enumerate(shapes):
            s = stride >> lvl  # levels are exactly 2x: strides halve
            # ceil(img / s) valid rows and columns
            rows = (img[:, 0] + s - 1) // s
            cols = (img[:, 1] + s - 1) // s
            ys = torch.arange(h, device=device)
            xs = torch.arange(w, device=device)
            masks.append(
                (ys[None, :, None] >= rows[:, None, None])
                | (xs[None, None, :] >= cols[:, None, None])
            )
        return masks

    def pre_transformer(
        self,
        img_feats: Tuple[Tensor],
        batch_data_samples: OptSampleList = None,
    ) -> Tuple[Dict, Dict]:
        """Flatten the levels, build masks and positions.

        Args:
            img_feats: L maps (B, C, h_l, w_l) from the neck, coarse to
                fine.
            batch_data_samples: for ``batch_input_shape`` and
                ``img_shape``.

        Returns:
            tuple[dict, dict]: the encoder's inputs (``feat``,
            ``feat_mask``, ``feat_pos`` of the coarsest level,
            ``fine_feats``) and the decoder's (``memory_mask``,
            ``memory_pos``, ``spatial_shapes``).
        """
        if len(img_feats) != self.num_levels:
            raise ValueError(
                f'SiADETR expects {self.num_levels} levels from the neck '
                f'(coarse to fine), got {len(img_feats)}'
            )
        shapes = [tuple(f.shape[-2:]) for f in img_feats]
        masks = self.padding_masks(
            shapes, batch_data_samples, img_feats[0].device
        )
        flat_feats, flat_pos, flat_masks = [], [], []
        for lvl, feat in enumerate(img_feats):
            mask = None if masks is None else masks[lvl]
            # [B, C, h, w]
            pos = self.positional_encoding(mask, input=feat)
            # [B, C, h, w] -> [B, h*w, C]
            flat_feats.append(feat.flatten(2).transpose(1, 2))
            flat_pos.append(pos.flatten(2).transpose(1, 2))
            if mask is not None:
                flat_masks.append(mask.flatten(1))  # [B, h*w]
        feat_mask = flat_masks[0] if masks is not None else None
        memory_mask = torch.cat(flat_masks, 1) if masks is not None else None
        fine_feats = None
        if self.num_levels > 1:
            fine_feats = torch.cat(flat_feats[1:], 1)
        # [B, sum hw, C], the level embedding added to every position
        memory_pos = torch.cat(
            [p + self.level_embed[lvl] for lvl, p in enumerate(flat_pos)], 1
        )
        encoder_inputs_dict = dict(
            feat=flat_feats[0],
            feat_mask=feat_mask,
            feat_pos=flat_pos[0],
            fine_feats=fine_feats,
        )
        decoder_inputs_dict = dict(
            memory_mask=memory_mask,
            memory_pos=memory_pos,
            spatial_shapes=shapes,
        )
        return encoder_inputs_dict, decoder_inputs_dict

    def forward_encoder(
        self,
        feat: Tensor,
        feat_mask: Optional[Tensor],
        feat_pos: Tensor,
        fine_feats: Optional[Tensor] = None,
    ) -> Dict:
        """Encode the coarsest level (B, h_0 w_0, C); the memory is it
        followed by the finer levels (B, sum hw, C)."""
        memory = feat
        if self.encoder is not None:
            memory = self.encoder(
                query=feat, query_pos=feat_pos, key_padding_mask=feat_mask
            )
        if fine_feats is not None:
            memory = torch.cat([memory, fine_feats], 1)
        return dict(memory=memory)

    def forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor],
        memory_pos: Tensor,
        spatial_shapes: Sequence[Tuple[int, int]],
    ) -> Dict:
        """Decoder over all levels; hidden states
        (num_layers, B, num_queries, C) and, with ``with_reference``, the
        reference points ``references`` (B, num_queries, 2); with
        ``with_box_refine``, ``references`` is the list of each layer's
        reference (the initial points (B, num_queries, 2), then the boxes
        (B, num_queries, 4) of layers 1..L)."""
        references, extra = None, {}
        if self.with_box_refine:
            references = self.ref_point_head(query_pos).sigmoid()
            hidden_states, inter_refs = self.decoder(
                query=query,
                key=memory,
                value=memory,
                query_pos=query_pos,
                key_pos=memory_pos,
                key_padding_mask=memory_mask,
                spatial_shapes=spatial_shapes,
                reference_points=references,
                reg_branches=self.bbox_head.reg_branches,
                encode_points=self.encode_points,
            )
            # DeformableDETRHead's inputs: layer l's boxes are offsets from
            # references[l] (the last one is unused, as in mmdet)
            outputs = dict(
                hidden_states=hidden_states,
                references=[references, *inter_refs],
            )
            if self.training:  # its loss takes the (absent) two-stage outputs
                outputs.update(enc_outputs_class=None, enc_outputs_coord=None)
            return outputs
        if self.with_reference:
            references = self.ref_point_head(query_pos).sigmoid()
            sine = self.encode_points(references)
            query_pos = query_pos + sine
            # for a cross-attention with spatial_query=True
            extra['query_sine_pos'] = sine
        hidden_states = self.decoder(
            query=query,
            key=memory,
            value=memory,
            query_pos=query_pos,
            key_pos=memory_pos,
            key_padding_mask=memory_mask,  # for cross_attn
            spatial_shapes=spatial_shapes,
            **extra,
        )
        if references is None:
            return dict(hidden_states=hidden_states)
        return dict(hidden_states=hidden_states, references=references)
