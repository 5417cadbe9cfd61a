# Copyright (c) mmvfm contributors. All rights reserved.
"""Image-text retrieval: ``g(f(image))`` vs ``g(f(caption))`` of the other
pairs in the batch, both ways, averaged."""

import torch
from mmengine.dist import get_dist_info
from torch import Tensor

from ...common import all_gather_with_grad
from ...language.captions import one_caption_each, sample_captions
from ..task_cfg import UNIPERCEIVER_TASKS
from .base import UniPerceiverTask


@UNIPERCEIVER_TASKS.register_module('retrieval')
class RetrievalTask(UniPerceiverTask):
    """Config: ``gather`` (default True: the candidates are the whole
    global batch, gathered across ranks *with* gradient,
    :func:`all_gather_with_grad`). One caption drawn per image. Predicts
    ``img_embed`` / ``text_embeds`` of all its captions
    (``RetrievalMetric``)."""

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> dict:
        cfg.setdefault('gather', True)
        return cfg

    def uses_collective(self, model) -> bool:
        return bool(model.task_cfgs[self.name]['gather'])

    def loss(self, model, inputs: Tensor, data_samples: list) -> dict:
        task = self.name
        images = model.represent_images(inputs, task)
        texts = model.represent_texts(
            one_caption_each(data_samples, 'UniPerceiverV2'), task
        )
        N = images.shape[0]
        rank, world = get_dist_info()
        gather = model.task_cfgs[task]['gather'] and world > 1
        all_images = all_gather_with_grad(images) if gather else images
        all_texts = all_gather_with_grad(texts) if gather else texts
        if all_texts.shape[0] < 2:
            raise ValueError(
                f'task {task!r}: a global retrieval batch of '
                f'{all_texts.shape[0]} pair: with no other candidate the '
                'loss is 0 (use batches of 2 or more)'
            )
        targets = torch.arange(N, device=images.device)
        if gather:
            targets = targets + rank * N
        i2t = model.loss_module(images, all_texts, targets)
        t2i = model.loss_module(texts, all_images, targets)
        return dict(loss=(i2t + t2i) / 2)

    def predict(self, model, inputs: Tensor, data_samples: list) -> list:
        images = model.represent_images(inputs, self.name)
        caps = [
            sample_captions(s, i, 'UniPerceiverV2')
            for i, s in enumerate(data_samples)
        ]
        flat = [c for cs in caps for c in cs]
        texts = model.represent_texts(flat, self.name)
        per_image = texts.split([len(cs) for cs in caps])
        for i, sample in enumerate(data_samples):
            sample.set_field(images[i], 'img_embed')
            sample.set_field(per_image[i], 'text_embeds')
        return data_samples
