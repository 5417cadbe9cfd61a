# Copyright (c) mmvfm contributors. All rights reserved.
"""What every GQPos detector adds to its mmdet parent: the ``gqpos``
module built from the config (None keeps the stock detector), the
build-time checks (the head has the box branch GQPos reuses; ``gqpos.attn``
is one the detector supports) and the decoder-layer call that gives the
guided position to both attentions or to the self-attention only."""

from typing import Dict, Optional, Sequence

from mmdet.models.layers.transformer import DetrTransformerDecoderLayer
from mmdet.utils import OptConfigType
from torch import Tensor, nn

from .query_pos_guide import build_query_pos_guide


def check_head_has(
    head: nn.Module, names: Sequence[str], detector: str
) -> None:
    """Fail at build time if ``head`` lacks a branch GQPos reuses."""
    missing = [n for n in names if not hasattr(head, n)]
    if missing:
        raise TypeError(
            f"{detector} with gqpos reuses the head's box branch "
            f'{names}, but {type(head).__name__} has no {missing}'
        )


class GQPosMixin:
    """Mix in before the mmdet detector; call :meth:`init_gqpos` at the
    end of ``__init__`` (it needs ``embed_dims``, ``decoder`` and
    ``bbox_head``) and implement ``gqpos_forward_decoder``.

    Attributes:
        GQPOS_HEAD_BRANCHES (tuple[str]): the head's attributes the
            detector's ``gqpos_box`` uses.
        GQPOS_ATTNS (tuple[str]): the ``gqpos.attn`` values the detector
            supports; the first is its default.
        GQPOS_LAYER_CALL (bool): whether the detector runs its decoder
            layers through :meth:`gqpos_layer`.
    """

    GQPOS_HEAD_BRANCHES: Sequence[str] = ()
    GQPOS_ATTNS: Sequence[str] = ('both', 'self')
    GQPOS_LAYER_CALL: bool = True
    gqpos: Optional[nn.Module]

    def init_gqpos(self, gqpos: OptConfigType) -> None:
        """Build ``self.gqpos`` (None: stock detector, no new weights)."""
        self.gqpos = build_query_pos_guide(
            gqpos, self.embed_dims, self.decoder.num_layers
        )
        if self.gqpos is None:
            return
        name = type(self).__name__
        check_head_has(self.bbox_head, self.GQPOS_HEAD_BRANCHES, name)
        if self.gqpos.attn is None:
            self.gqpos.attn = self.GQPOS_ATTNS[0]
        elif self.gqpos.attn not in self.GQPOS_ATTNS:
            raise ValueError(
                f'{name} supports gqpos.attn in {tuple(self.GQPOS_ATTNS)}, '
                f'got {self.gqpos.attn!r}'
            )
        if self.GQPOS_LAYER_CALL and self.gqpos.attn == 'self':
            for layer in self.decoder.layers:
                if type(layer).forward is not (
                    DetrTransformerDecoderLayer.forward
                ):
                    raise TypeError(
                        f"{name} with gqpos.attn='self' runs the decoder "
                        "layers' self- and cross-attention itself, as "
                        'DetrTransformerDecoderLayer.forward does; '
                        f'{type(layer).__name__} has its own forward'
                    )

    @property
    def with_gqpos(self) -> bool:
        return self.gqpos is not None

    def forward_decoder(self, *args, **kwargs) -> Dict:
        """The stock detector's ``forward_decoder`` with GQPos off, the
        detector's ``gqpos_forward_decoder`` (the stock decoder loop plus
        the position update; same arguments and outputs) with it on."""
        if not self.with_gqpos:
            return super().forward_decoder(*args, **kwargs)
        return self.gqpos_forward_decoder(*args, **kwargs)

    def gqpos_layer(
        self,
        layer: nn.Module,
        query: Tensor,
        query_pos: Tensor,
        stock_pos: Tensor,
        **kwargs,
    ) -> Tensor:
        """Run one decoder layer with the guided position ``query_pos``.

        ``gqpos.attn='both'``: the layer's own forward, ``query_pos`` in
        both attentions. ``'self'``: ``DetrTransformerDecoderLayer.forward``
        (mmdet 3.3) written out with two positions, ``query_pos`` in the
        self-attention and ``stock_pos`` (``query_pos[0]``) in the
        cross-attention.

        Args:
            layer (nn.Module): the decoder layer.
            query (Tensor): ``[bs, nq, c]``.
            query_pos (Tensor): the guided position ``[bs, nq, c]``.
            stock_pos (Tensor): ``query_pos[0]`` ``[bs, nq, c]``.
            **kwargs: the layer's other arguments (``key``, ``value``,
                ``key_pos``, ``key_padding_mask``, the attention masks and
                what the attentions take, e.g. ``reference_points``).

        Returns:
            Tensor: the layer's output ``[bs, nq, c]``.
        """
        if self.gqpos.attn == 'both':
            return layer(query, query_pos=query_pos, **kwargs)
        key = kwargs.pop('key', None)
        value = kwargs.pop('value', None)
        key_pos = kwargs.pop('key_pos', None)
        self_attn_mask = kwargs.pop('self_attn_mask', None)
        cross_attn_mask = kwargs.pop('cross_attn_mask', None)
        key_padding_mask = kwargs.pop('key_padding_mask', None)
        query = layer.self_attn(
            query=query,
            key=query,
            value=query,
            query_pos=query_pos,
            key_pos=query_pos,
            attn_mask=self_attn_mask,
            **kwargs,
        )
        query = layer.norms[0](query)
        query = layer.cross_attn(
            query=query,
            key=key,
            value=value,
            query_pos=stock_pos,
            key_pos=key_pos,
            attn_mask=cross_attn_mask,
            key_padding_mask=key_padding_mask,
            **kwargs,
        )
        query = layer.norms[1](query)
        query = layer.ffn(query)
        return layer.norms[2](query)
