# Copyright (c) mmvfm contributors. All rights reserved.
"""DETR with a guided query position (GQPos).

mmdet's ``DetrTransformerDecoder`` gives every layer the same query
position, the learned ``query_embedding`` ``[num_queries, c]``, which each
layer adds to the queries and keys of its self-attention and to the queries
of its cross-attention. ``GQPosDETR`` runs the same decoder layers itself
(``forward_decoder``) and, from layer 1 on, passes the position guided by
the previous layer's boxes instead (see ``query_pos_guide.py``):

- layer ``l``'s box is the one ``DETRHead`` predicts from layer ``l``'s
  hidden state ``h_l = post_norm(query_l)`` ``[bs, nq, c]``:
  ``sigmoid(fc_reg(relu(reg_ffn(h_l))))``, computed with the head's own
  branches (no second box predictor). The head still predicts from all
  hidden states afterwards, so training and inference are unchanged apart
  from the positions.
- GQPos replaces the position in *both* attentions of layers ``1 .. L-1``
  (DETR has one position for both).

Extra cost per forward: the head's reg branch on ``L - 1`` hidden states
and ``L - 1`` MLPs on ``[bs, nq, 4 * num_feats]``.

``gqpos=None`` is the stock ``DETR`` (``forward_decoder`` is the parent's).
"""

from typing import Dict

import torch
from mmdet.models.detectors import DETR
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor

from .gqpos_mixin import GQPosMixin


@MODELS.register_module()
class GQPosDETR(GQPosMixin, DETR):
    """DETR whose decoder layers ``1 .. L-1`` get box-guided positions.

    Args:
        *args, **kwargs: as :class:`mmdet.models.detectors.DETR`.
        gqpos (dict, optional): GQPos options (keys ``detach``,
            ``shared_mlp``, ``mode``, ``num_feats``, ``temperature``,
            ``mlp_layers``, ``zero_init``); None keeps the stock DETR.
    """

    GQPOS_HEAD_BRANCHES = ('fc_reg', 'reg_ffn', 'activate')

    def __init__(self, *args, gqpos: OptConfigType = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.init_gqpos(gqpos)

    def gqpos_box(self, hidden_state: Tensor) -> Tensor:
        """Layer boxes as ``DETRHead.forward`` predicts them:
        ``[bs, nq, c] -> [bs, nq, 4]`` normalised ``(cx, cy, w, h)``."""
        head = self.bbox_head
        return head.fc_reg(head.activate(head.reg_ffn(hidden_state))).sigmoid()

    def gqpos_forward_decoder(
        self,
        query: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        memory_pos: Tensor,
    ) -> Dict:
        """The stock decoder loop (``DetrTransformerDecoder.forward``) with
        ``query_pos`` updated after every layer but the last.

        Args:
            query (Tensor): ``[bs, nq, c]`` (zeros).
            query_pos (Tensor): the stock position ``[bs, nq, c]``.
            memory (Tensor): ``[bs, num_feat_points, c]``.
            memory_mask (Tensor): ``[bs, num_feat_points]`` or None.
            memory_pos (Tensor): ``[bs, num_feat_points, c]``.

        Returns:
            dict: ``hidden_states`` ``[L, bs, nq, c]`` (``[1, bs, nq, c]``
            without ``return_intermediate``), as the stock decoder.
        """
        decoder = self.decoder
        num_layers = len(decoder.layers)
        stock_pos = query_pos
        intermediate = []
        for layer_id, layer in enumerate(decoder.layers):
            query_pos = self.gqpos.probe(query_pos, layer_id)
            query = self.gqpos_layer(
                layer,
                query,
                query_pos,
                stock_pos,
                key=memory,
                value=memory,
                key_pos=memory_pos,
                key_padding_mask=memory_mask,
            )
            hidden_state = decoder.post_norm(query)
            if decoder.return_intermediate:
                intermediate.append(hidden_state)
            if layer_id < num_layers - 1:
                box = self.gqpos_box(hidden_state)
                query_pos = self.gqpos(box, layer_id, stock_pos)
        if decoder.return_intermediate:
            hidden_states = torch.stack(intermediate)
        else:
            hidden_states = hidden_state.unsqueeze(0)
        return dict(hidden_states=hidden_states)
