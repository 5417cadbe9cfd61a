# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2 (Li et al., CVPR 2023): image classification, image
captioning, image-text retrieval, detection and instance segmentation as
one maximum-likelihood problem over candidate sets, through one
task-agnostic decoder.

The authors never released code; every choice the paper leaves open is
ours, stated in the task modules and in configs/uniperceiver_v2/README.md.
This module is the glue: the encoders ``f`` and the decoder ``g`` that
every task shares. Elsewhere:

- ``task_cfg.py``: the ``tasks`` config, checked at build, and the task
  type registry :data:`UNIPERCEIVER_TASKS`;
- ``tasks/``: one module per task type (``classification``,
  ``retrieval``, ``captioning``, ``regions``: detection and instance
  segmentation), each with its config checks, ``loss`` and ``predict``;
- ``candidates.py``: the candidate sets (class names, the vocabulary) and
  which of them carry gradient; ``global_tokens.py``: :class:`GlobalTokens`.

Encoders ``f``:

- image: any backbone's last map (N, C, h, w) -> h*w tokens projected to
  the decoder's dims (positions: the backbone's own), plus ``num_global``
  *global tokens*: learned queries, each an attention pooling over those
  tokens. The decoder's image input is ``[global tokens, map tokens]``;
- region: a proposal stage's proposals as :class:`ProposalTokens`, after
  the global tokens (:meth:`UniPerceiverV2.region_outputs`);
- text: a :class:`TextTransformer` (its token features, projected);
  ``<bos> text <eos>`` from the :class:`BPETokenizer`.

Decoder ``g`` (:class:`TaskAgnosticDecoder`): ``<SPE>`` prepended, its
output the representation; normalised, compared by cosine / τ
(:class:`UnifiedMLELoss`). The loss of an iteration of task ``k`` is
``w_k * NLL_k`` (``loss_weight``, default 1): the sampling ratio is not a
factor (the multi-task loop draws the task with it).
"""

import copy
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement
from torch import Tensor

from ..language.bpe_tokenizer import PAD
from ..language.lazy_tokenizer import LazyTokenizerMixin
from ..multi_task.base import BaseMultiTaskModel
from . import candidates
from .global_tokens import GlobalTokens
from .proposal_tokens import ProposalTokens
from .task_agnostic_decoder import IMAGE_TYPE, TEXT_TYPE
from .task_cfg import UNIPERCEIVER_TASKS, check_dataset_classes, check_task
from .tasks import UniPerceiverTask

__all__ = ['GlobalTokens', 'UniPerceiverV2']


@MODELS.register_module()
class UniPerceiverV2(LazyTokenizerMixin, BaseMultiTaskModel):
    """Args:
    backbone (dict): the image backbone (its last output a map
        (N, C, h, w) or tokens (N, S, C)).
    text_encoder (dict): a :class:`TextTransformer` config.
    tokenizer (dict): a :class:`BPETokenizer` config (read at first use).
    decoder (dict): a :class:`TaskAgnosticDecoder` config.
    tasks (dict): task name -> ``dict(type=..., loss_weight=1.0, ...)``,
        ``type`` a task type of ``tasks/`` (its keys: its module's doc);
        every task with candidates: ``grad_candidates`` (how many carry
        gradient per step, default all) and ``candidate_chunk``
        (:func:`candidates.encode`).
    image_channels (int): the backbone's channels C.
    num_global (int): global image tokens.
    global_heads (int): heads of each global token's pooling.
    loss (dict): the :class:`UnifiedMLELoss` config.
    proposer (dict, optional): the :class:`RegionProposer` config, required
        by ``'detection'`` / ``'instance_segmentation'`` tasks.
    proposal_tokens (dict, optional): :class:`ProposalTokens` arguments
        other than ``dims`` (``num_feats``, ``pool_size``, ...).
    data_preprocessor (dict, optional): usually
        ``MultiTaskDataPreprocessor``.
    init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        backbone: dict,
        text_encoder: dict,
        tokenizer: dict,
        decoder: dict,
        tasks: Dict[str, dict],
        image_channels: int,
        num_global: int = 4,
        global_heads: int = 4,
        loss: Optional[dict] = None,
        proposer: Optional[dict] = None,
        proposal_tokens: Optional[dict] = None,
        data_preprocessor: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg
        )
        self.check_task_names(list(tasks or {}))
        self.task_cfgs = {n: check_task(n, c) for n, c in tasks.items()}
        self.task_index = {n: i for i, n in enumerate(self.task_cfgs)}
        self.task_types: Dict[str, UniPerceiverTask] = {
            n: UNIPERCEIVER_TASKS.get(c['type'])(n)
            for n, c in self.task_cfgs.items()
        }
        decoder = dict(decoder)
        if decoder.get('moe') is not None:
            decoder['moe'] = dict(decoder['moe'], num_tasks=len(tasks))
        # NOTE the build order fixes the parameters' random initialisation
        self.backbone = MODELS.build(backbone)
        self.text_encoder = MODELS.build(text_encoder)
        self.decoder = MODELS.build(decoder)
        dims = self.decoder.dims
        self.image_proj = nn.Sequential(
            nn.Linear(image_channels, dims), nn.LayerNorm(dims)
        )
        width = self.text_encoder.token_embed.embedding_dim
        self.text_proj = nn.Sequential(
            nn.Linear(width, dims), nn.LayerNorm(dims)
        )
        self.global_tokens = (
            GlobalTokens(dims, num_global, global_heads)
            if num_global
            else None
        )
        self.loss_module = MODELS.build(
            dict(type='UnifiedMLELoss', **(loss or {}))
        )
        self.tokenizer_cfg = copy.deepcopy(dict(tokenizer))
        vocab = self.tokenizer_cfg.setdefault(
            'vocab_size', self.text_encoder.vocab_size
        )
        if vocab != self.text_encoder.vocab_size:
            # checked at build; the file's size is the tokenizer's check
            raise ValueError(
                f'UniPerceiverV2: tokenizer.vocab_size {vocab} differs from '
                f'text_encoder.vocab_size {self.text_encoder.vocab_size}'
            )
        self.proposer = None
        if proposer is not None:
            self.proposer = MODELS.build(proposer)
            self.sem_proj = nn.Sequential(
                nn.Linear(self.proposer.query_dims, dims), nn.LayerNorm(dims)
            )
            self.proposal_tokens = ProposalTokens(
                dims, **(proposal_tokens or {})
            )
        by_type: Dict[type, list] = {}
        for name, kind in self.task_types.items():
            by_type.setdefault(type(kind), []).append(name)
        for kind, names in by_type.items():
            kind.check_model(self, names)

    # ----------------------------------------------------- task interface
    @property
    def tasks(self):
        return list(self.task_cfgs)

    def loss_weight(self, task: str) -> float:
        return self.task_cfgs[task]['loss_weight']

    def task_uses_collective(self, task: str) -> bool:
        """Retrieval that gathers across ranks, and the region tasks when
        the proposal stage averages its loss normalisers over the ranks
        (its ``sync_normalizers``)."""
        return self.task_types[task].uses_collective(self)

    def check_task_data(self, task: str, metainfo: dict) -> None:
        """A task's dataset declares the task's candidate class names, in
        the same order (:func:`task_cfg.check_dataset_classes`)."""
        if task in self.task_cfgs:
            check_dataset_classes(task, self.task_cfgs[task], metainfo)

    @property
    def device(self) -> torch.device:
        """Where the model's tensors live (its temperature's device): every
        tensor the model makes (token ids, candidate indices) goes here."""
        return self.loss_module.logit_scale.device

    # ----------------------------------------------------------- encoders
    def backbone_maps(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        """The backbone's outputs as a tuple (the last one read by the
        global and map tokens, all of them by the proposal stage)."""
        out = self.backbone(inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    def map_tokens(self, maps: Tuple[Tensor, ...]) -> Tensor:
        """The last map's tokens, projected: (N, h*w, dims)."""
        out = maps[-1]
        if out.dim() == 4:
            out = out.flatten(2).transpose(1, 2)  # [N, C, h, w] -> [N, h*w, C]
        return self.image_proj(out)

    def image_tokens(
        self, inputs: Tensor, maps: Optional[Tuple[Tensor, ...]] = None
    ) -> Tensor:
        """``f(image)``: (N, 3, H, W) -> (N, num_global + h*w, dims)
        (``maps``: the backbone's outputs when already computed)."""
        tokens = self.map_tokens(maps or self.backbone_maps(inputs))
        if self.global_tokens is not None:
            tokens = torch.cat([self.global_tokens(tokens), tokens], dim=1)
        return tokens

    def region_outputs(
        self, maps: Tuple[Tensor, ...], proposals: dict, task: str
    ) -> Tensor:
        """``g(f(region))`` of every proposal (N, Q, dims), unnormalised.

        One decoder sequence per image, ``[<SPE>, global tokens, proposal
        tokens]`` (our choice: the proposals see the image through the
        global tokens and each other, not the map tokens); the outputs at
        the proposal positions. ``proposals``: the proposal stage's, or
        those of :func:`tasks.regions.select_proposals`.
        """
        tokens = self.proposal_tokens(
            self.sem_proj(proposals['queries']),
            proposals['boxes'],
            proposals['mask_logits'],
        )
        G = 0
        if self.global_tokens is not None:
            glob = self.global_tokens(self.map_tokens(maps))
            G = glob.shape[1]
            tokens = torch.cat([glob, tokens], dim=1)
        modality = tokens.new_full(tokens.shape[1:2], IMAGE_TYPE).long()
        out = self.decoder(tokens, modality, self.task_index[task])
        return out[:, 1 + G :]

    def text_tokens(self, ids: Tensor) -> Tensor:
        """``f(text)``: ids (N, L) -> (N, L, dims)."""
        return self.text_proj(self.text_encoder(ids)[0])

    def encode_texts(self, texts: Sequence[str]) -> Tuple[Tensor, Tensor]:
        """Token ids (N, L) and padding (N, L) of ``texts``."""
        ids, valid = self.tokenizer.encode(texts)
        return ids.to(self.device), ~valid.to(self.device)

    def represent_images(self, inputs: Tensor, task: str) -> Tensor:
        """``g(f(image))`` normalised: (N, dims)."""
        tokens = self.image_tokens(inputs)
        modality = tokens.new_full(tokens.shape[1:2], IMAGE_TYPE).long()
        return self.decoder.represent(tokens, modality, self.task_index[task])

    def represent_texts(self, texts: Sequence[str], task: str) -> Tensor:
        """``g(f(text))`` normalised: (N, dims)."""
        ids, pad = self.encode_texts(texts)
        tokens = self.text_tokens(ids)
        modality = torch.full(
            tokens.shape[1:2], TEXT_TYPE, device=tokens.device
        )
        return self.decoder.represent(
            tokens, modality, self.task_index[task], key_padding_mask=pad
        )

    def caption_outputs(
        self, image_tokens: Tensor, prefix: Tensor, task: str
    ) -> Tensor:
        """The decoder's outputs at the caption positions (N, T, dims) for
        image tokens (N, S, dims) and caption prefixes (N, T): image tokens
        (and ``<SPE>``) see only the image, caption tokens the image and the
        earlier caption tokens (the text encoder is causal: checked at
        build)."""
        N, S, _ = image_tokens.shape
        T = prefix.shape[1]
        text = self.text_tokens(prefix)
        tokens = torch.cat([image_tokens, text], dim=1)
        modality = torch.cat(
            [
                torch.full((S,), IMAGE_TYPE, device=tokens.device),
                torch.full((T,), TEXT_TYPE, device=tokens.device),
            ]
        )
        L = 1 + S + T  # with <SPE>
        mask = torch.zeros(L, L, dtype=torch.bool, device=tokens.device)
        mask[: 1 + S, 1 + S :] = True  # <SPE> and image: not the caption
        mask[1 + S :, 1 + S :] = torch.ones(
            T, T, dtype=torch.bool, device=tokens.device
        ).triu(1)  # caption: itself and earlier tokens
        pad = torch.cat(
            [prefix.new_zeros(N, S, dtype=torch.bool), prefix == PAD], dim=1
        )
        out = self.decoder(
            tokens,
            modality,
            self.task_index[task],
            attn_mask=mask,
            key_padding_mask=pad,
        )
        return out[:, 1 + S :]

    # --------------------------------------------------------- candidates
    def _candidates(
        self,
        encode: Callable[[Tensor], Tensor],
        num: int,
        task: str,
        targets: Optional[Tensor] = None,
    ) -> Tensor:
        """:func:`candidates.encode` with ``task``'s config."""
        return candidates.encode(
            encode, num, self.task_cfgs[task], self.device, targets
        )

    def class_candidates(
        self, task: str, targets: Optional[Tensor] = None
    ) -> Tensor:
        """:func:`candidates.class_candidates` (K, dims)."""
        return candidates.class_candidates(self, task, targets)

    def word_ids(self) -> Tensor:
        """:func:`candidates.word_ids` of the text encoder's vocabulary."""
        return candidates.word_ids(self.text_encoder.vocab_size, self.device)

    def vocab_candidates(
        self,
        task: str,
        targets: Optional[Tensor] = None,
        words: Optional[Tensor] = None,
    ) -> Tensor:
        """:func:`candidates.vocab_candidates` (V', dims)."""
        return candidates.vocab_candidates(self, task, targets, words)

    # -------------------------------------------------------------- steps
    def task_loss(self, inputs: Tensor, data_samples: list, task: str):
        return self.task_types[task].loss(self, inputs, data_samples)

    def loss(self, inputs: Tensor, data_samples: list, task: str) -> dict:
        """``{'<task>.loss': w_k * NLL_k, 'logit_scale': 1 / τ}``; region
        tasks add the proposal stage's losses ``'<task>.proposal.<name>'``,
        also times ``w_k``."""
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError(
                'UniPerceiverV2: loss needs one data sample per image'
            )
        losses = super().loss(inputs, data_samples, task)
        losses['logit_scale'] = self.loss_module.scale.detach()
        return losses

    def generate(self, inputs: Tensor, task: str) -> Tensor:
        """A captioning task's generated ids (N, T) (no ``<bos>``;
        ``<pad>`` after ``<eos>``)."""
        return self.task_types[task].generate(self, inputs)

    def predict(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ) -> list:
        """The task type's predictions in each data sample (its module:
        ``pred_score`` / ``pred_label``, ``img_embed`` / ``text_embeds``,
        ``pred_caption``, ``pred_instances``)."""
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(inputs))]
        return self.task_types[task].predict(self, inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples, task: str) -> Tensor:
        return self.represent_images(inputs, task)
