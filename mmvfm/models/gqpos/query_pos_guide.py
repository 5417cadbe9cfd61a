# Copyright (c) mmvfm contributors. All rights reserved.
"""The GQPos position guide: a decoder layer's boxes -> the next layer's
query position.

GQPos (guided query position, arXiv 2108.09691) feeds each decoder layer's
predicted boxes back into the *position* of the object queries: for layer
``l = 0 .. L-2`` with boxes ``box[l]`` ``[bs, num_queries, 4]`` (normalised
``(cx, cy, w, h)``, as the head predicts them)::

    enc[l]          = sine(box[l])                # [bs, nq, 4 * num_feats]
    query_pos[l+1]  = MLP_l(enc[l])               # mode='replace'
    query_pos[l+1]  = query_pos[0] + MLP_l(enc[l])  # mode='add'

``query_pos[0]`` is the detector's stock position (the learned query
embedding, or the proposal embedding of a two-stage Deformable DETR), and
layer 0 always runs with it. ``sine`` is mmdet's ``coordinate_to_encoding``
(each of ``cx, cy, w, h`` -> ``num_feats`` sin/cos features, ordered
``y, x, w, h``; scale ``2 * pi``).

Every choice the paper leaves open is an option of ``gqpos=dict(...)``
(defaults in :data:`GQPOS_DEFAULTS`):

- ``detach`` (True): the box enters the encoding detached, so the position
  path trains the MLP but sends no gradient into the box branch or the
  layer that predicted it (as DAB-DETR and DINO detach their refined
  boxes). ``False`` lets it flow.
- ``shared_mlp`` (False): one MLP per transition (``L - 1`` MLPs, from layer
  ``l`` to ``l + 1``) or one MLP for all of them.
- ``mode`` (``'add'``): add the guided position to ``query_pos[0]`` (the
  query keeps its learned identity) or ``'replace'`` it.
- ``num_feats`` (``embed_dims // 2``): sine features per coordinate; the
  MLP input is ``4 * num_feats``.
- ``temperature`` (10000): the sine encoding's temperature.
- ``mlp_layers`` (2): linear layers of each MLP (ReLU between them, hidden
  and output width ``embed_dims``), as mmdet's ``MLP``.
- ``zero_init`` (False): zero the last linear layer of each MLP, so that a
  fresh GQPos model with ``mode='add'`` starts as the stock detector (only
  allowed with ``mode='add'``). Otherwise weights are Xavier-uniform (as
  the detectors initialise their decoder, where DAB-DETR and DINO keep
  their position MLP) and biases zero.
- ``attn`` (None: the detector's default): which attentions of layers
  ``1 .. L-1`` take the guided position. ``'both'``: the self-attention
  and the cross-attention (the decoder layer's own forward, one
  ``query_pos`` for both); ``'self'``: the self-attention only, the
  cross-attention keeps ``query_pos[0]``. DETR and Deformable DETR default
  to ``'both'``; Conditional DETR allows ``'self'`` only (its
  cross-attention takes the position in layer 0 alone). Resolved and
  checked by the detector (``GQPosMixin``).

Parameters live under ``gqpos.mlps.{i}.layers.{j}.{weight,bias}`` only,
so a stock checkpoint loads into a GQPos model with exactly those keys
missing. ``gqpos.probe`` is a parameter-free identity that every decoder
layer's query position passes through (``probe(query_pos, layer_id)``); a
forward hook on it records ``query_pos[l]`` for ``l = 0 .. L-1``.
"""

import numbers
from typing import Any, Dict, Optional

import torch.nn as nn
from mmdet.models.layers.transformer import MLP, coordinate_to_encoding
from mmengine.model import BaseModule
from torch import Tensor

GQPOS_DEFAULTS: Dict[str, Any] = dict(
    detach=True,
    shared_mlp=False,
    mode='add',
    num_feats=None,
    temperature=10000,
    mlp_layers=2,
    zero_init=False,
    attn=None,
)
GQPOS_MODES = ('add', 'replace')
GQPOS_ATTNS = ('both', 'self')


def parse_gqpos_cfg(gqpos: Optional[dict]) -> Optional[Dict[str, Any]]:
    """Check a ``gqpos`` config and fill in the defaults.

    Args:
        gqpos (dict, optional): the user's ``gqpos=dict(...)``; ``None``
            turns GQPos off.

    Returns:
        dict | None: every key of :data:`GQPOS_DEFAULTS`, or None.

    Raises:
        TypeError, KeyError, ValueError: naming the offending key.
    """
    if gqpos is None:
        return None
    if not isinstance(gqpos, dict):
        raise TypeError(
            f'gqpos must be a dict or None, got {type(gqpos).__name__}'
        )
    unknown = sorted(set(gqpos) - set(GQPOS_DEFAULTS))
    if unknown:
        raise KeyError(
            f'gqpos: unknown key(s) {unknown}; allowed keys are '
            f'{sorted(GQPOS_DEFAULTS)}'
        )
    cfg = dict(GQPOS_DEFAULTS)
    cfg.update(gqpos)
    for key in ('detach', 'shared_mlp', 'zero_init'):
        if not isinstance(cfg[key], bool):
            raise TypeError(f'gqpos.{key} must be a bool, got {cfg[key]!r}')
    if cfg['mode'] not in GQPOS_MODES:
        raise ValueError(
            f'gqpos.mode must be one of {GQPOS_MODES}, got {cfg["mode"]!r}'
        )
    num_feats = cfg['num_feats']
    if num_feats is not None and (
        isinstance(num_feats, bool)
        or not isinstance(num_feats, int)
        or num_feats < 1
    ):
        raise ValueError(
            f'gqpos.num_feats must be a positive int or None, got '
            f'{num_feats!r}'
        )
    temperature = cfg['temperature']
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or temperature <= 0
    ):
        raise ValueError(
            f'gqpos.temperature must be a positive number, got {temperature!r}'
        )
    mlp_layers = cfg['mlp_layers']
    if (
        isinstance(mlp_layers, bool)
        or not isinstance(mlp_layers, int)
        or mlp_layers < 1
    ):
        raise ValueError(
            f'gqpos.mlp_layers must be an int >= 1, got {mlp_layers!r}'
        )
    if cfg['attn'] is not None and cfg['attn'] not in GQPOS_ATTNS:
        raise ValueError(
            f'gqpos.attn must be one of {GQPOS_ATTNS} or None, got '
            f'{cfg["attn"]!r}'
        )
    if cfg['zero_init'] and cfg['mode'] != 'add':
        raise ValueError(
            'gqpos.zero_init=True needs gqpos.mode="add" (with "replace" '
            'every layer after the first would start at position zero)'
        )
    return cfg


class QueryPosProbe(nn.Module):
    """Identity with a recording point: ``probe(query_pos, layer_id)``
    returns ``query_pos`` ``[bs, num_queries, embed_dims]`` unchanged; a
    forward hook sees ``args == (query_pos, layer_id)``."""

    def forward(self, query_pos: Tensor, layer_id: int) -> Tensor:
        return query_pos


class QueryPosGuide(BaseModule):
    """Boxes of decoder layer ``l`` -> query position of layer ``l + 1``.

    Args:
        embed_dims (int): the decoder's width (MLP hidden and output).
        num_layers (int): decoder layers ``L`` (>= 2); ``L - 1`` MLPs unless
            ``shared_mlp``.
        detach, shared_mlp, mode, num_feats, temperature, mlp_layers,
        zero_init, attn: see the module docstring.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(
        self,
        embed_dims: int,
        num_layers: int,
        detach: bool = True,
        shared_mlp: bool = False,
        mode: str = 'add',
        num_feats: Optional[int] = None,
        temperature: float = 10000,
        mlp_layers: int = 2,
        zero_init: bool = False,
        attn: Optional[str] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        cfg = parse_gqpos_cfg(
            dict(
                detach=detach,
                shared_mlp=shared_mlp,
                mode=mode,
                num_feats=num_feats,
                temperature=temperature,
                mlp_layers=mlp_layers,
                zero_init=zero_init,
                attn=attn,
            )
        )
        if num_layers < 2:
            raise ValueError(
                'gqpos needs a decoder with at least 2 layers (the first '
                f'layer keeps the stock position), got num_layers={num_layers}'
            )
        self.embed_dims = embed_dims
        self.num_layers = num_layers
        self.detach = cfg['detach']
        self.shared_mlp = cfg['shared_mlp']
        self.mode = cfg['mode']
        self.num_feats = cfg['num_feats'] or embed_dims // 2
        self.temperature = cfg['temperature']
        self.mlp_layers = cfg['mlp_layers']
        self.zero_init = cfg['zero_init']
        # None until the detector resolves its default (GQPosMixin)
        self.attn = cfg['attn']
        num_mlps = 1 if self.shared_mlp else num_layers - 1
        self.mlps = nn.ModuleList(
            MLP(4 * self.num_feats, embed_dims, embed_dims, self.mlp_layers)
            for _ in range(num_mlps)
        )
        self.probe = QueryPosProbe()
        if self.zero_init:
            self._zero_last_layers()

    def _zero_last_layers(self) -> None:
        for mlp in self.mlps:
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)

    def init_weights(self) -> None:
        """Xavier-uniform weights, zero biases; then ``zero_init``."""
        super().init_weights()
        for mlp in self.mlps:
            for layer in mlp.layers:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        if self.zero_init:
            self._zero_last_layers()

    def encode(self, box: Tensor) -> Tensor:
        """Sine encoding ``[bs, nq, 4] -> [bs, nq, 4 * num_feats]``."""
        return coordinate_to_encoding(
            box, num_feats=self.num_feats, temperature=self.temperature
        )

    def forward(self, box: Tensor, layer_id: int, stock_pos: Tensor) -> Tensor:
        """The query position of layer ``layer_id + 1``.

        Args:
            box (Tensor): layer ``layer_id``'s boxes, normalised
                ``(cx, cy, w, h)``, ``[bs, num_queries, 4]``.
            layer_id (int): ``0 .. num_layers - 2``.
            stock_pos (Tensor): ``query_pos[0]``, ``[bs, num_queries, c]``.

        Returns:
            Tensor: ``[bs, num_queries, c]``.
        """
        if not 0 <= layer_id < self.num_layers - 1:
            raise IndexError(
                f'layer_id must be in [0, {self.num_layers - 2}], got '
                f'{layer_id}'
            )
        if self.detach:
            box = box.detach()
        mlp = self.mlps[0 if self.shared_mlp else layer_id]
        pos = mlp(self.encode(box))
        if self.mode == 'add':
            pos = stock_pos + pos
        return pos

    def extra_repr(self) -> str:
        return (
            f'detach={self.detach}, shared_mlp={self.shared_mlp}, '
            f'mode={self.mode!r}, num_feats={self.num_feats}, '
            f'temperature={self.temperature}, zero_init={self.zero_init}'
        )


def build_query_pos_guide(
    gqpos: Optional[dict], embed_dims: int, num_layers: int
) -> Optional[QueryPosGuide]:
    """A :class:`QueryPosGuide` from a detector's ``gqpos`` argument, or
    None when ``gqpos`` is None (GQPos off)."""
    cfg = parse_gqpos_cfg(gqpos)
    if cfg is None:
        return None
    return QueryPosGuide(embed_dims=embed_dims, num_layers=num_layers, **cfg)
