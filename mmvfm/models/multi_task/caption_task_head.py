# Copyright (c) mmvfm contributors. All rights reserved.
"""Image captioning as a task of :class:`MultiTaskModel`."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS
from torch import Tensor

from ..language.bpe_tokenizer import BOS
from ..language.captions import one_caption_each
from .task_heads import _TaskHead


@MODELS.register_module()
class CaptionTaskHead(_TaskHead):
    """Captioning from the shared features: a :class:`CaptionHead` (the
    ``head``) reads one feature map, flattened to visual tokens.

    The map is ``feats[in_index]`` after the optional ``neck`` (applied to
    the whole tuple, as the other task heads do): (N, C, H, W) becomes
    (N, H*W, C) tokens, row-major; a map that is already tokens (N, S, C)
    (e.g. mmpretrain's ViT with ``out_type='raw'``) is taken as is.

    - ``loss``: each image contributes one of its ``gt_caption``\\ s, drawn
      uniformly at random every step with torch's generator (seeded by the
      runner's ``randomness``); the head's teacher-forcing losses
      (``loss_caption``, and ``acc_caption`` for the log).
    - ``predict``: sets ``pred_caption`` (str) in each data sample, the
      head's generation with its ``decode_cfg``, for ``CaptionMetric``.
    - ``forward``: the generated ids (N, T).

    Args:
        head (dict): the :class:`CaptionHead` config; its ``in_channels``
            must be the map's C.
        neck (dict, optional): a neck on the shared features.
        in_index (int): which map of the features (default: the last).
        uses_collective (bool, optional): the head's loss communicates
            across ranks (it does not by default).
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        head: dict,
        neck: Optional[dict] = None,
        in_index: int = -1,
        uses_collective: Optional[bool] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(
            head=head,
            neck=neck,
            uses_collective=uses_collective,
            init_cfg=init_cfg,
        )
        self.in_index = in_index

    def visual_tokens(self, feats: Union[Tensor, Tuple[Tensor]]) -> Tensor:
        """The visual tokens (N, S, C) of the features (class docstring)."""
        feats = self._feats(feats)
        if isinstance(feats, (list, tuple)):
            try:
                x = feats[self.in_index]
            except IndexError:
                raise ValueError(
                    f'CaptionTaskHead: in_index={self.in_index} but the '
                    f'features are {len(feats)} maps'
                ) from None
        else:
            x = feats
        if x.dim() == 4:
            return x.flatten(2).transpose(1, 2)  # [N, H*W, C]
        if x.dim() != 3:
            raise ValueError(
                'CaptionTaskHead: the feature map must be (N, C, H, W) or '
                f'tokens (N, S, C), got {tuple(x.shape)}'
            )
        return x

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return self.head.generate(self.visual_tokens(feats))[0]

    def check_inputs(self, feats: Tuple[Tensor]) -> None:
        """The visual tokens through the head's projection and one
        decoding step, so that a channel mismatch fails at build time."""
        tokens = self.visual_tokens(feats)
        bos = torch.full(
            (tokens.shape[0], 1), BOS, dtype=torch.long, device=tokens.device
        )
        self.head(tokens, bos)

    def loss(self, feats: Tuple[Tensor], data_samples: Sequence) -> Dict:
        tokens = self.visual_tokens(feats)
        captions = one_caption_each(data_samples, 'CaptionTaskHead')
        ids, mask = self.head.encode(captions, device=tokens.device)
        return self.head.loss(tokens, ids, mask)

    def predict(self, feats: Tuple[Tensor], data_samples: Sequence) -> List:
        texts = self.head.predict_captions(self.visual_tokens(feats))
        for sample, text in zip(data_samples, texts):
            if isinstance(sample, dict):
                sample['pred_caption'] = text
            else:
                sample.pred_caption = text
        return list(data_samples)
