# Copyright (c) mmvfm contributors. All rights reserved.
"""A transformer text encoder over :class:`BPETokenizer` ids.

Token embedding + learned positions, ``depth`` pre-norm transformer layers
(``nn.TransformerEncoderLayer``: PyTorch's fused attention path), a final
LayerNorm. ``causal=True`` masks attention to later tokens (CLIP's text
tower, a captioning decoder's prefix); ``causal=False`` is bidirectional
(BERT-style, Uni-Perceiver v2's text encoder). Padding (``<pad>``, id 0)
never reaches a real token: it is masked as a key.

The pooled text feature (``pool``): ``'eos'`` the output at the last real
token (``<eos>``; CLIP), ``'bos'`` at the first (``<bos>``; a [CLS]-style
token, for bidirectional encoders), ``'mean'`` the mean over real tokens;
optionally projected to ``proj_dims`` (no bias, as CLIP).
"""

from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .bpe_tokenizer import PAD

POOLS = ('eos', 'bos', 'mean')


@MODELS.register_module()
class TextTransformer(BaseModule):
    """Args:
    vocab_size (int): the tokenizer's (checked when it is loaded).
    width (int): model dims.
    depth (int): layers.
    num_heads (int): attention heads.
    max_length (int): longest sequence (learned positions).
    causal (bool): causal self-attention.
    pool (str): ``'eos'``, ``'bos'`` or ``'mean'`` (module doc).
    proj_dims (int, optional): a linear projection of the pooled
        feature (no bias).
    mlp_ratio (float): FFN width / ``width``.
    dropout (float): dropout in the layers.
    init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        vocab_size: int,
        width: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        max_length: int = 32,
        causal: bool = True,
        pool: str = 'eos',
        proj_dims: Optional[int] = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
        if width % num_heads:
            raise ValueError(
                f'width {width} must be a multiple of num_heads {num_heads}'
            )
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.causal = causal
        self.pool = pool
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(max_length, width))
        layer = nn.TransformerEncoderLayer(
            width,
            num_heads,
            int(width * mlp_ratio),
            dropout,
            activation='gelu',
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, depth, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(width)
        self.proj = (
            nn.Linear(width, proj_dims, bias=False) if proj_dims else None
        )
        self.out_dims = proj_dims or width
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    def forward(self, ids: Tensor) -> Tuple[Tensor, Tensor]:
        """Args:
            ids (Tensor): (N, L) int64 token ids, ``<pad>`` = 0 after the
                text (:meth:`BPETokenizer.encode`).

        Returns:
            tuple: token features (N, L, width) and the pooled text feature
            (N, out_dims).
        """
        N, L = ids.shape
        if L > self.max_length:
            raise ValueError(
                f'TextTransformer: {L} tokens, max_length is '
                f'{self.max_length} (encode with max_length <= it)'
            )
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f'TextTransformer: token id {int(ids.max())} >= vocab_size '
                f'{self.vocab_size} (another tokenizer?)'
            )
        valid = ids != PAD  # [N, L]
        x = self.token_embed(ids) + self.pos_embed[:L]
        causal_mask = None
        if self.causal:
            # [L, L]: True above the diagonal = not attended
            causal_mask = torch.ones(
                L, L, dtype=torch.bool, device=ids.device
            ).triu(1)
        x = self.layers(
            x,
            mask=causal_mask,
            src_key_padding_mask=~valid,
            is_causal=self.causal,
        )
        x = self.norm(x)  # [N, L, width]
        if self.pool == 'eos':
            last = valid.long().sum(1).clamp_min(1) - 1  # [N]
            pooled = x[torch.arange(N, device=ids.device), last]
        elif self.pool == 'bos':
            pooled = x[:, 0]
        else:
            w = valid.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(1) / w.sum(1).clamp_min(1)
        if self.proj is not None:
            pooled = self.proj(pooled)
        return x, pooled
