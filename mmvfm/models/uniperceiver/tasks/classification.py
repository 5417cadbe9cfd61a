# Copyright (c) mmvfm contributors. All rights reserved.
"""Image classification: ``g(f(image))`` vs the class names."""

import torch
from torch import Tensor

from ...common import set_class_scores
from ..task_cfg import UNIPERCEIVER_TASKS, check_classes
from .base import UniPerceiverTask


def image_labels(data_samples, task: str, num: int, device) -> Tensor:
    """Each sample's ``gt_label`` (N,), checked against the ``num``
    classes."""
    labels = []
    for i, sample in enumerate(data_samples):
        label = sample.get('gt_label', None)
        if label is None:
            raise ValueError(
                f'UniPerceiverV2: task {task!r} sample {i} has no gt_label'
            )
        label = int(torch.as_tensor(label).reshape(-1)[0])
        if not 0 <= label < num:
            raise ValueError(
                f'UniPerceiverV2: task {task!r} sample {i} has label '
                f'{label}, the task {num} classes'
            )
        labels.append(label)
    return torch.tensor(labels, device=device)


@UNIPERCEIVER_TASKS.register_module('classification')
class ClassificationTask(UniPerceiverTask):
    """Config: ``classes``, ``synonyms``, ``template``
    (:func:`~mmvfm.models.uniperceiver.task_cfg.check_classes`).
    Predicts ``pred_score`` / ``pred_label`` (mmpretrain's ``Accuracy``)."""

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> dict:
        check_classes(name, cfg)
        return cfg

    def loss(self, model, inputs: Tensor, data_samples: list) -> dict:
        task = self.name
        images = model.represent_images(inputs, task)
        num = len(model.task_cfgs[task]['classes'])
        labels = image_labels(data_samples, task, num, model.device)
        classes = model.class_candidates(task, labels)
        return dict(loss=model.loss_module(images, classes, labels))

    def predict(self, model, inputs: Tensor, data_samples: list) -> list:
        logits = model.loss_module.logits(
            model.represent_images(inputs, self.name),
            model.class_candidates(self.name),
        )
        scores = logits.softmax(-1)
        for i, sample in enumerate(data_samples):
            set_class_scores(sample, scores[i])
        return data_samples
