# Copyright (c) mmvfm contributors. All rights reserved.
"""A CLIP-style image-text model (Radford et al., 2021): any image backbone
and :class:`~mmvfm.models.language.TextTransformer`, trained by symmetric
InfoNCE (:class:`~mmvfm.models.losses.ContrastiveLoss`, learnable clamped
temperature, keys gathered across ranks with gradient).

Image feature: the backbone's last output, mean-pooled when it is a map
(N, C, H, W) or a token sequence (N, L, C) and used as is when (N, C),
then projected (no bias) to ``embed_dims``. The toy ViT runs with
``out_type='featmap'``, so its keys are exactly those of the ViT trunk of
``configs/vit_trunk`` and the checkpoint loads there with
``prefix='image_encoder.'`` (NOTE: CLIP pools the class token; mean
pooling keeps the trunk free of a class token it does not use). Text
feature: the text encoder's pooled output (``pool='eos'``), projected by
its own ``proj_dims`` = ``embed_dims``.

Training (``mode='loss'``) takes one of each image's ``gt_caption`` at
random (torch's generator, so seeded runs repeat). Prediction sets in each
data sample:

- ``img_embed`` (E,) and, when the sample has ``gt_caption``,
  ``text_embeds`` (K, E), L2-normalised, for
  :class:`~mmvfm.evaluation.RetrievalMetric`;
- with ``zero_shot`` configured, ``pred_score`` (C,) (softmax of the scaled
  cosine similarity to each class's prompt ensemble) and ``pred_label``,
  for mmpretrain's ``Accuracy``.

The tokenizer file is read at the first forward, never at build, so every
config builds (also on the meta device) without it.
"""

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement
from torch import Tensor

from ..common import set_class_scores
from ..language.captions import one_caption_each, sample_captions
from ..language.lazy_tokenizer import LazyTokenizerMixin
from .prompts import DEFAULT_TEMPLATES, check_templates, class_prompts


@MODELS.register_module()
class CLIP(LazyTokenizerMixin, BaseModel):
    """Args:
    image_encoder (dict): an image backbone config (e.g.
        ``mmpretrain.VisionTransformer``).
    text_encoder (dict): a ``TextTransformer`` config with
        ``proj_dims=embed_dims``.
    tokenizer (dict): a ``BPETokenizer`` config (``file``, optional
        ``max_length``, default the text encoder's); ``vocab_size``, when
        given, must be the text encoder's.
    embed_dims (int): the joint embedding size E.
    image_dims (int, optional): the backbone's output channels; default
        its ``embed_dims`` attribute.
    loss (dict): the contrastive loss config.
    zero_shot (dict, optional): ``classes`` (list of names) and
        ``templates`` (strings with one ``{}``; default a few generic
        ones) for zero-shot classification in ``predict``.
    data_preprocessor (dict, optional): e.g.
        ``mmpretrain.ClsDataPreprocessor``.
    init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        image_encoder: dict,
        text_encoder: dict,
        tokenizer: dict,
        embed_dims: int,
        image_dims: Optional[int] = None,
        loss: dict = dict(type='ContrastiveLoss'),
        zero_shot: Optional[dict] = None,
        data_preprocessor: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg
        )
        self.image_encoder = MODELS.build(image_encoder)
        self.text_encoder = MODELS.build(text_encoder)
        image_dims = image_dims or getattr(
            self.image_encoder, 'embed_dims', None
        )
        if not image_dims:
            raise ValueError(
                'CLIP: image_dims is required for a backbone without an '
                '`embed_dims` attribute'
            )
        if self.text_encoder.out_dims != embed_dims:
            raise ValueError(
                f'CLIP: text_encoder outputs {self.text_encoder.out_dims} '
                f'dims, embed_dims is {embed_dims} (set text_encoder.'
                f'proj_dims={embed_dims})'
            )
        self.image_proj = nn.Linear(image_dims, embed_dims, bias=False)
        nn.init.normal_(self.image_proj.weight, std=image_dims**-0.5)
        self.loss_module = MODELS.build(loss)

        tokenizer = dict(tokenizer)
        vocab = tokenizer.setdefault(
            'vocab_size', self.text_encoder.vocab_size
        )
        if vocab != self.text_encoder.vocab_size:
            raise ValueError(
                f'CLIP: tokenizer.vocab_size {vocab} differs from '
                f'text_encoder.vocab_size {self.text_encoder.vocab_size}'
            )
        max_length = tokenizer.setdefault(
            'max_length', self.text_encoder.max_length
        )
        if max_length > self.text_encoder.max_length:
            raise ValueError(
                f'CLIP: tokenizer.max_length {max_length} exceeds '
                f'text_encoder.max_length {self.text_encoder.max_length}'
            )
        self.tokenizer_cfg = tokenizer

        self.zero_shot = None
        if zero_shot is not None:
            zero_shot = dict(zero_shot)
            unknown = set(zero_shot) - {'classes', 'templates'}
            if unknown or 'classes' not in zero_shot:
                raise ValueError(
                    'CLIP: zero_shot takes `classes` (required) and '
                    f'`templates`, got {sorted(zero_shot)}'
                )
            zero_shot.setdefault('templates', DEFAULT_TEMPLATES)
            check_templates(zero_shot['templates'])
            self.zero_shot = zero_shot
        self._classifier: Optional[Tensor] = None

    # ---- the two towers ------------------------------------------------

    def extract_image_feat(self, inputs: Tensor) -> Tensor:
        """Args:
            inputs (Tensor): (N, 3, H, W) normalised images.

        Returns:
            Tensor: (N, E) image features (not normalised).
        """
        out = self.image_encoder(inputs)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        if out.dim() == 4:  # [N, C, H, W] -> [N, C]
            out = out.mean((2, 3))
        elif out.dim() == 3:  # [N, L, C] -> [N, C]
            out = out.mean(1)
        return self.image_proj(out)

    def extract_text_feat(self, texts: Sequence[str]) -> Tensor:
        """Args:
            texts (list[str]): N texts (over-long ones are truncated).

        Returns:
            Tensor: (N, E) text features (not normalised).
        """
        ids, _ = self.tokenizer.encode(texts)
        device = self.image_proj.weight.device
        return self.text_encoder(ids.to(device))[1]

    # ---- zero-shot classifier ------------------------------------------

    def train(self, mode: bool = True):
        # the cached class embeddings are stale once weights may change
        self._classifier = None
        return super().train(mode)

    def class_embeddings(self) -> Tensor:
        """(C, E) normalised prompt-ensemble embedding of each class,
        cached until the next ``train()`` / ``eval()``."""
        if self.zero_shot is None:
            raise RuntimeError('CLIP: zero_shot is not configured')
        if self._classifier is None:
            classes = self.zero_shot['classes']
            templates = list(self.zero_shot['templates'])
            prompts = class_prompts(
                classes,
                templates,
                self.tokenizer.tokenize,
                self.tokenizer.max_length,
            )
            with torch.no_grad():
                emb = F.normalize(self.extract_text_feat(prompts), dim=-1)
                emb = emb.view(len(classes), len(templates), -1).mean(1)
                self._classifier = F.normalize(emb, dim=-1)
        return self._classifier

    # ---- BaseModel -----------------------------------------------------

    def forward(
        self,
        inputs: Tensor,
        data_samples: Optional[list] = None,
        mode: str = 'tensor',
    ) -> Union[dict, list, Tensor]:
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.extract_image_feat(inputs)
        raise RuntimeError(f'CLIP: invalid mode {mode!r}')

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """Symmetric InfoNCE of each image and one of its captions."""
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError('CLIP: loss needs one data sample per image')
        texts = one_caption_each(data_samples, 'CLIP')
        image = self.extract_image_feat(inputs)
        text = self.extract_text_feat(texts)
        return self.loss_module(image, text)

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None):
        """Embeddings (and zero-shot scores) in each data sample (module
        docstring)."""
        image = F.normalize(self.extract_image_feat(inputs), dim=-1)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(inputs))]
        has_caps = [s.get('gt_caption') is not None for s in data_samples]
        text_embeds = [None] * len(data_samples)
        if any(has_caps):
            caps = [
                sample_captions(s, i, 'CLIP') if has else []
                for i, (s, has) in enumerate(zip(data_samples, has_caps))
            ]
            flat = [c for cs in caps for c in cs]
            emb = F.normalize(self.extract_text_feat(flat), dim=-1)
            text_embeds = list(emb.split([len(cs) for cs in caps]))
        scores = None
        if self.zero_shot is not None:
            logits = self.loss_module.scale * image @ self.class_embeddings().T
            scores = logits.softmax(-1)
        for i, sample in enumerate(data_samples):
            sample.set_field(image[i], 'img_embed')
            if has_caps[i]:
                sample.set_field(text_embeds[i], 'text_embeds')
            if scores is not None:
                set_class_scores(sample, scores[i])
        return data_samples
