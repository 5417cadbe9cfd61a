# Copyright (c) mmvfm contributors. All rights reserved.
"""Deformable DETR (with or without box refinement) with a guided query
position (GQPos).

In mmdet's ``DeformableDetrTransformerDecoder`` two things locate a query:

- the *reference points* ``[bs, nq, 2]`` (``[bs, nq, 4]`` with two-stage
  or after a refinement step) around which the multi-scale deformable
  cross-attention samples. Without box refinement they are fixed; with it
  (``with_box_refine=True``) each layer's box, detached, becomes the next
  layer's reference;
- the *query position* ``query_pos`` ``[bs, nq, c]``, the first half of the
  learned ``query_embedding`` (or the proposal embedding with two-stage). It
  is added to the queries and keys of each layer's self-attention and to
  the query from which the cross-attention predicts its sampling offsets
  and attention weights; it never changes across layers.

``GQPosDeformableDETR`` changes the query position only: from layer 1 on
it is guided by the previous layer's boxes, in the self-attention and in
the offset / weight prediction (``gqpos.attn='both'``, the default) or in
the self-attention only (``'self'``; the offset / weight query keeps the
stock position). With box refinement the toy set favoured ``'self'``:
the sampling already follows the refined box there (configs/gqpos).
Reference points behave exactly as the stock detector's
(``with_box_refine`` stays the detector's own option).

Layer ``l``'s box is the one ``DeformableDETRHead`` predicts for layer
``l``: ``sigmoid(reg_branches[l](h_l) + inverse_sigmoid(ref_l))``
(only ``cx, cy`` get the offset when ``ref_l`` is 2-d), ``ref_l`` the
reference layer ``l`` sampled around. With box refinement this is the very
tensor the decoder detaches into the next reference, so the box costs
nothing extra; without it the head's (shared) reg branch is run once more
per layer.

``gqpos=None`` is the stock ``DeformableDETR``.
"""

from typing import Dict

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor

from .gqpos_mixin import GQPosMixin


@MODELS.register_module()
class GQPosDeformableDETR(GQPosMixin, DeformableDETR):
    """Deformable DETR whose query positions of layers ``1 .. L-1`` are
    guided by the previous layer's boxes.

    Args:
        *args, **kwargs: as :class:`mmdet.models.detectors.DeformableDETR`
            (``with_box_refine`` and ``as_two_stage`` included).
        gqpos (dict, optional): GQPos options (see ``GQPosDETR``); None
            keeps the stock Deformable DETR.
    """

    GQPOS_HEAD_BRANCHES = ('reg_branches',)

    def __init__(self, *args, gqpos: OptConfigType = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.init_gqpos(gqpos)

    def gqpos_box(
        self, layer_id: int, hidden_state: Tensor, reference: Tensor
    ) -> Tensor:
        """Layer boxes as ``DeformableDETRHead.forward`` predicts them (and
        as the decoder refines them with ``with_box_refine``).

        Args:
            layer_id (int): the decoder layer.
            hidden_state (Tensor): its output ``[bs, nq, c]``.
            reference (Tensor): the reference it sampled around,
                ``[bs, nq, 2]`` or ``[bs, nq, 4]``, in ``[0, 1]``.

        Returns:
            Tensor: ``[bs, nq, 4]`` normalised ``(cx, cy, w, h)``.
        """
        reg = self.bbox_head.reg_branches[layer_id](hidden_state)
        if reference.shape[-1] == 4:
            return (reg + inverse_sigmoid(reference)).sigmoid()
        assert reference.shape[-1] == 2
        center = reg[..., :2] + inverse_sigmoid(reference)
        return torch.cat([center, reg[..., 2:]], dim=-1).sigmoid()

    def gqpos_forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
    ) -> Dict:
        """The stock loop (``DeformableDetrTransformerDecoder.forward``)
        with ``query_pos`` updated after every layer but the last.

        Args:
            query, query_pos (Tensor): ``[bs, nq, c]``.
            memory (Tensor): ``[bs, num_feat_points, c]``.
            memory_mask (Tensor): ``[bs, num_feat_points]``.
            reference_points (Tensor): ``[bs, nq, 2]`` (``[bs, nq, 4]``
                with two-stage).
            spatial_shapes (Tensor): ``[num_levels, 2]``.
            level_start_index (Tensor): ``[num_levels]``.
            valid_ratios (Tensor): ``[bs, num_levels, 2]``.

        Returns:
            dict: ``hidden_states`` ``[L, bs, nq, c]`` and ``references``
            (the initial and the ``L`` per-layer references), as the stock
            detector.
        """
        decoder = self.decoder
        num_layers = len(decoder.layers)
        init_reference = reference_points
        stock_pos = query_pos
        intermediate, intermediate_references = [], []
        for layer_id, layer in enumerate(decoder.layers):
            if reference_points.shape[-1] == 4:
                ratios = torch.cat([valid_ratios, valid_ratios], -1)
            else:
                ratios = valid_ratios
            # [bs, nq, 2|4] -> [bs, nq, num_levels, 2|4]
            reference_points_input = (
                reference_points[:, :, None] * ratios[:, None]
            )
            query_pos = self.gqpos.probe(query_pos, layer_id)
            query = self.gqpos_layer(
                layer,
                query,
                query_pos,
                stock_pos,
                value=memory,
                key_padding_mask=memory_mask,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                valid_ratios=valid_ratios,
                reference_points=reference_points_input,
            )
            is_last = layer_id == num_layers - 1
            if self.with_box_refine or not is_last:
                box = self.gqpos_box(layer_id, query, reference_points)
            if not is_last:
                query_pos = self.gqpos(box, layer_id, stock_pos)
            if self.with_box_refine:
                reference_points = box.detach()
            if decoder.return_intermediate:
                intermediate.append(query)
                intermediate_references.append(reference_points)
        if decoder.return_intermediate:
            hidden_states = torch.stack(intermediate)
            inter_references = torch.stack(intermediate_references)
        else:
            hidden_states, inter_references = query, reference_points
        references = [init_reference, *inter_references]
        return dict(hidden_states=hidden_states, references=references)
