# Copyright (c) mmvfm contributors. All rights reserved.
"""An autoregressive transformer caption decoder over visual tokens.

The visual tokens (N, S, C) of any image encoder (a ViT's patch tokens, a
flattened feature map) are projected to the decoder's width (a linear layer
and a LayerNorm); ``depth`` pre-norm decoder layers follow, each with

- causal self-attention over the caption so far, with a key / value cache
  for incremental decoding (one new token per step);
- cross-attention over the projected visual tokens;
- an MLP (GELU);

over token embeddings plus learned positions, then a final LayerNorm and
the output projection to the vocabulary, by default tied to the token
embedding (its transpose, plus a bias). Attention is
``F.scaled_dot_product_attention``. This transformer is the only decoder:
ViSFT's paper uses a "Show, attend and tell" attention LSTM, not provided.

Ids are :class:`~.bpe_tokenizer.BPETokenizer`'s: ``<bos> text <eos>``
then ``<pad>``. Training is teacher forcing: the decoder reads
``ids[:, :-1]`` and predicts ``ids[:, 1:]``, cross-entropy (optionally
label-smoothed) averaged over the real target tokens (padding ignored).
Generation (:meth:`CaptionHead.generate`) is greedy or beam search through
:mod:`.decoding`; it never produces ``<pad>``, ``<bos>`` or the other
special tokens except ``<eos>``.

Lengths: ``max_length`` is the longest caption in tokens with ``<bos>``
and ``<eos>`` (the tokenizer's, and the learned positions'); generation
makes at most ``max_length - 1`` tokens (``<eos>`` included).

The tokenizer is built from its config on first use (encoding training
captions, decoding generated ids), not when the head is built: a model
builds without the tokenizer file (on the meta device too).
"""

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .bpe_tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS
from .decoding import beam_search, expand_cache, greedy_search
from .lazy_tokenizer import LazyTokenizerMixin

KV = Tuple[Tensor, Tensor]  # keys, values: (N, heads, tokens, head dims)
MODES = ('greedy', 'beam')


class CaptionDecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention (cached), cross-
    attention over the visual tokens, MLP.

    Args:
        width (int): model dims.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP width / ``width``.
        dropout (float): dropout of the attention weights and the residual
            branches.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.self_proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(width, 2 * width)
        self.cross_proj = nn.Linear(width, width)
        self.norm3 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        """(N, T, width) -> (N, heads, T, head dims)."""
        N, T, _ = x.shape
        return x.view(N, T, self.num_heads, -1).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, **kwargs
        )  # [N, heads, T, head dims]
        return out.transpose(1, 2).flatten(2)  # [N, T, width]

    def memory(self, visual: Tensor) -> KV:
        """Keys and values of the cross-attention.

        Args:
            visual (Tensor): (N, S, width) projected visual tokens.

        Returns:
            tuple: keys, values (N, heads, S, head dims).
        """
        k, v = self.cross_kv(visual).chunk(2, dim=-1)
        # contiguous once: attention would copy strided keys every step
        return self._heads(k).contiguous(), self._heads(v).contiguous()

    def forward(
        self, x: Tensor, memory: KV, past: Optional[KV] = None
    ) -> Tuple[Tensor, KV]:
        """Args:
            x (Tensor): (N, T, width), the tokens at positions P .. P+T-1.
            memory (tuple): the cross-attention's keys and values
                (:meth:`memory`).
            past (tuple, optional): self-attention keys and values of
                positions 0 .. P-1, (N, heads, P, head dims) each.

        Returns:
            tuple: (N, T, width) and the self-attention keys and values of
            positions 0 .. P+T-1 (the next step's ``past``).
        """
        T = x.shape[1]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        P = 0
        if past is not None:
            P = past[0].shape[2]
            k = torch.cat([past[0], k], 2)
            v = torch.cat([past[1], v], 2)
        if T == 1:  # the newest token attends to every earlier one
            attn = self._attend(q, k, v)
        elif P == 0:
            attn = self._attend(q, k, v, is_causal=True)
        else:  # T new tokens after P cached ones
            rows = torch.arange(T, device=x.device)[:, None] + P
            allowed = torch.arange(P + T, device=x.device)[None] <= rows
            attn = self._attend(q, k, v, attn_mask=allowed)
        x = x + self.drop(self.self_proj(attn))
        q = self._heads(self.cross_q(self.norm2(x)))
        x = x + self.drop(self.cross_proj(self._attend(q, *memory)))
        x = x + self.drop(self.mlp(self.norm3(x)))
        return x, (k, v)


@MODELS.register_module()
class CaptionHead(LazyTokenizerMixin, BaseModule):
    """Caption decoder over visual tokens (module docstring).

    Args:
        vocab_size (int): the tokenizer's (checked when it is loaded).
        in_channels (int): C of the visual tokens (N, S, C).
        width (int): decoder dims.
        depth (int): decoder layers.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP width / ``width``.
        max_length (int): longest caption in tokens, ``<bos>`` and
            ``<eos>`` included (learned positions; the tokenizer's
            ``max_length`` unless its config sets one).
        dropout (float): dropout in the layers and of the embeddings.
        tie_embeddings (bool): the output projection is the token
            embedding's transpose (plus a bias).
        label_smoothing (float): of the cross-entropy.
        tokenizer (dict, optional): e.g. ``dict(type='BPETokenizer',
            file='data/toy_coco/tokenizer.json', vocab_size=512)``; built on
            first use. ``vocab_size`` defaults to the head's (it must be the
            head's), ``max_length`` to the head's.
        decode_cfg (dict, optional): defaults of :meth:`generate`:
            ``mode`` (``'greedy'`` | ``'beam'``), ``beam_size`` (3),
            ``max_length`` (``max_length - 1``), ``length_penalty`` (0.6,
            GNMT's alpha, see :mod:`.decoding`).
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        vocab_size: int,
        in_channels: int,
        width: int = 256,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        max_length: int = 32,
        dropout: float = 0.0,
        tie_embeddings: bool = True,
        label_smoothing: float = 0.0,
        tokenizer: Optional[dict] = None,
        decode_cfg: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if width % num_heads:
            raise ValueError(
                f'width {width} must be a multiple of num_heads {num_heads}'
            )
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f'vocab_size {vocab_size}: the special tokens alone take '
                f'{len(SPECIAL_TOKENS)}'
            )
        if max_length < 3:
            raise ValueError(f'max_length must be >= 3, got {max_length}')
        self.vocab_size = vocab_size
        self.in_channels = in_channels
        self.max_length = max_length
        self.label_smoothing = label_smoothing
        self.tokenizer_cfg = self._tokenizer_cfg(tokenizer)
        self.decode_cfg = dict(
            mode='greedy',
            beam_size=3,
            max_length=max_length - 1,
            length_penalty=0.6,
        )
        unknown = set(decode_cfg or {}) - set(self.decode_cfg)
        if unknown:
            raise KeyError(
                f'decode_cfg: unknown keys {sorted(unknown)} '
                f'(known: {sorted(self.decode_cfg)})'
            )
        self.decode_cfg.update(decode_cfg or {})
        self._check_decode(self.decode_cfg)

        self.visual_proj = nn.Sequential(
            nn.Linear(in_channels, width), nn.LayerNorm(width)
        )
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(max_length, width))
        self.embed_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            CaptionDecoderLayer(width, num_heads, mlp_ratio, dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out_proj = (
            None
            if tie_embeddings
            else nn.Linear(width, vocab_size, bias=False)
        )
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))
        # never generated: every special token but <eos>
        banned = [i for i in range(len(SPECIAL_TOKENS)) if i != EOS]
        self.register_buffer(
            'banned', torch.tensor(banned, dtype=torch.long), persistent=False
        )
        self._reset_parameters()

    def _tokenizer_cfg(self, cfg: Optional[dict]) -> Optional[dict]:
        if cfg is None:
            return None
        cfg = copy.deepcopy(dict(cfg))
        cfg.setdefault('vocab_size', self.vocab_size)
        if cfg['vocab_size'] != self.vocab_size:
            raise ValueError(
                f'CaptionHead: tokenizer.vocab_size={cfg["vocab_size"]} but '
                f'vocab_size={self.vocab_size}'
            )
        cfg.setdefault('max_length', self.max_length)
        return cfg

    def _check_decode(self, cfg: dict) -> None:
        if cfg['mode'] not in MODES:
            raise ValueError(
                f'mode must be one of {MODES}, got {cfg["mode"]!r}'
            )
        if not 1 <= cfg['max_length'] <= self.max_length - 1:
            raise ValueError(
                f'generation max_length {cfg["max_length"]}: must be in '
                f'[1, {self.max_length - 1}] (the head has {self.max_length}'
                ' positions, <bos> included)'
            )
        if cfg['beam_size'] < 1:
            raise ValueError(f'beam_size must be >= 1, got {cfg["beam_size"]}')

    def _reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)

    # ------------------------------------------------------------------
    def encode(
        self, captions: Sequence[str], device=None
    ) -> Tuple[Tensor, Tensor]:
        """Ids (N, L) int64 and mask (N, L) bool of ``captions`` with the
        tokenizer (``<bos> text <eos>`` then ``<pad>``), on ``device``."""
        ids, mask = self.tokenizer.encode(list(captions))
        return ids.to(device), mask.to(device)

    # ------------------------------------------------------------------
    def project_visual(self, visual_tokens: Tensor) -> Tensor:
        """(N, S, in_channels) -> (N, S, width)."""
        if visual_tokens.dim() != 3:
            raise ValueError(
                'CaptionHead: visual tokens must be (N, S, C), got '
                f'{tuple(visual_tokens.shape)}'
            )
        if visual_tokens.shape[-1] != self.in_channels:
            raise ValueError(
                f'CaptionHead: visual tokens have {visual_tokens.shape[-1]} '
                f'channels, in_channels is {self.in_channels}'
            )
        return self.visual_proj(visual_tokens)

    def memory(self, visual_tokens: Tensor) -> List[KV]:
        """Each layer's cross-attention keys and values of the visual
        tokens (N, S, in_channels): a list of (N, heads, S, head dims)
        pairs."""
        visual = self.project_visual(visual_tokens)
        return [layer.memory(visual) for layer in self.layers]

    def decode(
        self,
        ids: Tensor,
        memory: List[KV],
        past: Optional[List[KV]] = None,
    ) -> Tuple[Tensor, List[KV]]:
        """Logits of the next token after each of ``ids``.

        Args:
            ids (Tensor): (N, T) int64 tokens at positions P .. P+T-1.
            memory (list): :meth:`memory` of the visual tokens (N rows).
            past (list, optional): each layer's self-attention keys and
                values of positions 0 .. P-1 (the ``past`` this method
                returned for the earlier tokens), or None (P = 0).

        Returns:
            tuple: logits (N, T, vocab_size) and each layer's keys and
            values of positions 0 .. P+T-1.
        """
        N, T = ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        if P + T > self.max_length:
            raise ValueError(
                f'CaptionHead: {P + T} tokens, max_length is '
                f'{self.max_length} (encode with max_length <= it)'
            )
        x = self.token_embed(ids) + self.pos_embed[P : P + T]
        x = self.embed_drop(x)
        present = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, memory[i], None if past is None else past[i])
            present.append(kv)
        x = self.norm(x)
        weight = (
            self.token_embed.weight
            if self.out_proj is None
            else self.out_proj.weight
        )
        return F.linear(x, weight, self.out_bias), present

    def forward(self, visual_tokens: Tensor, ids: Tensor) -> Tensor:
        """Teacher forcing.

        Args:
            visual_tokens (Tensor): (N, S, in_channels).
            ids (Tensor): (N, T) int64 input tokens, ``<bos>`` first.

        Returns:
            Tensor: (N, T, vocab_size) logits of the token after each.
        """
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f'CaptionHead: token id {int(ids.max())} >= vocab_size '
                f'{self.vocab_size} (another tokenizer?)'
            )
        return self.decode(ids, self.memory(visual_tokens))[0]

    def loss(
        self,
        visual_tokens: Tensor,
        ids: Tensor,
        mask: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Teacher-forcing cross-entropy of encoded captions.

        Args:
            visual_tokens (Tensor): (N, S, in_channels).
            ids (Tensor): (N, L) int64 ``<bos> text <eos> <pad>...``
                (:meth:`BPETokenizer.encode`).
            mask (Tensor, optional): (N, L) bool, True at real tokens;
                defaults to ``ids != <pad>``. What ``ids`` holds where it
                is False does not change the loss.

        Returns:
            dict: ``loss_caption`` the (label-smoothed) cross-entropy
            averaged over the real target tokens ``ids[:, 1:]``, and
            ``acc_caption`` (no gradient) the fraction of them predicted
            exactly by the argmax.
        """
        if ids.dim() != 2 or ids.shape[1] < 2:
            raise ValueError(
                'CaptionHead.loss: ids must be (N, L) with L >= 2 (<bos> '
                f'... <eos>), got {tuple(ids.shape)}'
            )
        if mask is None:
            mask = ids != PAD
        ids = ids.masked_fill(~mask, PAD)
        logits = self(visual_tokens, ids[:, :-1])  # [N, L-1, V]
        target, valid = ids[:, 1:], mask[:, 1:]
        ce = F.cross_entropy(
            logits.flatten(0, 1),
            target.flatten(),
            reduction='none',
            label_smoothing=self.label_smoothing,
        ).view_as(target)
        count = valid.sum().clamp_min(1)
        loss = (ce * valid).sum() / count
        with torch.no_grad():
            hit = (logits.argmax(-1) == target) & valid
            acc = hit.sum().to(logits.dtype) / count
        return dict(loss_caption=loss, acc_caption=acc)

    # ------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        visual_tokens: Tensor,
        mode: Optional[str] = None,
        beam_size: Optional[int] = None,
        max_length: Optional[int] = None,
        length_penalty: Optional[float] = None,
        use_cache: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        """Captions of the visual tokens (N, S, in_channels), greedy or
        beam search (:mod:`.decoding`); unset arguments come from
        ``decode_cfg``.

        Args:
            visual_tokens (Tensor): (N, S, in_channels).
            mode (str): ``'greedy'`` or ``'beam'``.
            beam_size (int): beams per image (``'beam'``).
            max_length (int): the most generated tokens, ``<eos>``
                included, <= the head's ``max_length - 1``.
            length_penalty (float): GNMT's alpha (``'beam'``).
            use_cache (bool): decode one token per step with the
                self-attention cache (True) or re-run the whole prefix every
                step (False; slower, the same result).

        Returns:
            tuple: ids (N, T) int64 without ``<bos>``, ``<pad>`` after
            ``<eos>`` (T <= max_length), and scores (N,): the summed
            log-probabilities (greedy) or with the length penalty (beam).
        """
        given = dict(
            mode=mode,
            beam_size=beam_size,
            max_length=max_length,
            length_penalty=length_penalty,
        )
        cfg = dict(self.decode_cfg)
        cfg.update({k: v for k, v in given.items() if v is not None})
        self._check_decode(cfg)
        N = visual_tokens.shape[0]
        memory = self.memory(visual_tokens)
        beams = cfg['beam_size'] if cfg['mode'] == 'beam' else 1
        if beams > 1:  # a beam never leaves its image: expand once
            memory = expand_cache(memory, beams)

        def step(tokens: Tensor, past: Any) -> Tuple[Tensor, Any]:
            logits, present = self.decode(tokens, memory, past)
            logits = logits[:, -1]
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()  # scores summed over many steps
            logits = logits.index_fill(1, self.banned, float('-inf'))
            return logits.log_softmax(-1), present

        common = dict(
            batch_size=N,
            bos=BOS,
            eos=EOS,
            max_length=cfg['max_length'],
            use_cache=use_cache,
            pad=PAD,
            device=visual_tokens.device,
        )
        if cfg['mode'] == 'greedy':
            return greedy_search(step, **common)
        return beam_search(
            step,
            beam_size=beams,
            length_penalty=cfg['length_penalty'],
            **common,
        )

    def predict_captions(self, visual_tokens: Tensor, **kwargs) -> List[str]:
        """The generated captions (:meth:`generate` with ``kwargs``) as
        texts (the tokenizer's ``decode``)."""
        ids, _ = self.generate(visual_tokens, **kwargs)
        return self.tokenizer.decode(ids)
