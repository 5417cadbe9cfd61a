# Copyright (c) mmvfm contributors. All rights reserved.
"""Conditional DETR with a guided query position (GQPos).

In mmdet's ``ConditionalDetrTransformerDecoder`` the learned position
``query_pos`` ``[bs, nq, c]`` plays three roles:

1. the reference point: ``reference = sigmoid(ref_point_head(query_pos))``
   ``[bs, nq, 2]``, computed once before the first layer; its sine encoding
   (scaled by ``query_scale(query)`` from layer 1 on) is the *conditional
   spatial query* of every cross-attention, and the head predicts each box
   relative to it;
2. the position of every layer's self-attention (queries and keys);
3. the positional part of the first layer's cross-attention query
   (``qpos_proj``; later layers have none).

``GQPosConditionalDETR`` changes role 2 only: from layer 1 on, the
self-attention position is guided by the previous layer's boxes. The
reference point and the conditional spatial query stay the stock ones,
derived from the learned embedding: moving them per layer would be box
refinement (what DAB-DETR does), and the head's box parametrisation
(offsets from one reference per query) stays valid.

Layer ``l``'s box is the one ``ConditionalDETRHead`` predicts from
``h_l = post_norm(query_l)``: ``r = fc_reg(relu(reg_ffn(h_l)))``,
``r[..., :2] += inverse_sigmoid(reference)``, ``sigmoid(r)``, with the
head's own branches.

``gqpos=None`` is the stock ``ConditionalDETR``.
"""

from typing import Dict

import torch
from mmdet.models.detectors import ConditionalDETR
from mmdet.models.layers.transformer import (
    coordinate_to_encoding,
    inverse_sigmoid,
)
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor

from .gqpos_mixin import GQPosMixin


@MODELS.register_module()
class GQPosConditionalDETR(GQPosMixin, ConditionalDETR):
    """Conditional DETR whose self-attention positions of layers
    ``1 .. L-1`` are guided by the previous layer's boxes.

    Args:
        *args, **kwargs: as :class:`mmdet.models.detectors.ConditionalDETR`.
        gqpos (dict, optional): GQPos options (see ``GQPosDETR``); None
            keeps the stock Conditional DETR.
    """

    # its cross-attention takes the position in layer 0 only: GQPos guides
    # the self-attention, through the layer's own forward
    GQPOS_ATTNS = ('self',)
    GQPOS_LAYER_CALL = False
    GQPOS_HEAD_BRANCHES = ('fc_reg', 'reg_ffn', 'activate')

    def __init__(self, *args, gqpos: OptConfigType = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.init_gqpos(gqpos)

    def gqpos_box(
        self, hidden_state: Tensor, reference_unsigmoid: Tensor
    ) -> Tensor:
        """Layer boxes as ``ConditionalDETRHead.forward`` predicts them.

        Args:
            hidden_state (Tensor): ``[bs, nq, c]``.
            reference_unsigmoid (Tensor): ``[bs, nq, 2]``.

        Returns:
            Tensor: ``[bs, nq, 4]`` normalised ``(cx, cy, w, h)``.
        """
        head = self.bbox_head
        reg = head.fc_reg(head.activate(head.reg_ffn(hidden_state)))
        center = reg[..., :2] + reference_unsigmoid
        return torch.cat([center, reg[..., 2:]], dim=-1).sigmoid()

    def gqpos_forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        memory_pos: Tensor,
    ) -> Dict:
        """The stock loop (``ConditionalDetrTransformerDecoder.forward``)
        with ``query_pos`` updated after every layer but the last.

        Returns:
            dict: ``hidden_states`` ``[L, bs, nq, c]`` and ``references``
            ``[bs, nq, 2]``, as the stock decoder.
        """
        decoder = self.decoder
        num_layers = len(decoder.layers)
        stock_pos = query_pos
        # NOTE the reference point comes from the stock position and stays
        # fixed, as in the stock decoder; GQPos moves the self-attention
        # position only.
        reference = decoder.ref_point_head(stock_pos).sigmoid()
        reference_unsigmoid = inverse_sigmoid(reference)
        ref_sine_embed = coordinate_to_encoding(
            coord_tensor=reference[..., :2]
        )
        intermediate = []
        for layer_id, layer in enumerate(decoder.layers):
            if layer_id == 0:
                pos_transformation = 1
            else:
                pos_transformation = decoder.query_scale(query)
            query_pos = self.gqpos.probe(query_pos, layer_id)
            query = layer(
                query,
                key=memory,
                query_pos=query_pos,
                key_pos=memory_pos,
                key_padding_mask=memory_mask,
                ref_sine_embed=ref_sine_embed * pos_transformation,
                is_first=(layer_id == 0),
            )
            hidden_state = decoder.post_norm(query)
            if decoder.return_intermediate:
                intermediate.append(hidden_state)
            if layer_id < num_layers - 1:
                box = self.gqpos_box(hidden_state, reference_unsigmoid)
                query_pos = self.gqpos(box, layer_id, stock_pos)
        if decoder.return_intermediate:
            hidden_states = torch.stack(intermediate)
        else:
            hidden_states = hidden_state.unsqueeze(0)
        return dict(hidden_states=hidden_states, references=reference)
