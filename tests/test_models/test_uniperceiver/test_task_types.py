# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's task types: the registry, a new type added as a
registered class (nothing else), and the model glue's single device."""

import pytest
import torch
from mmdet.registry import MODELS
from test_uni_perceiver_v2 import (
    CAPTIONS,
    _images,
    _model,
    _samples,
    tokenizer_file,  # noqa: F401
)
from test_uni_perceiver_v2 import _cfg as base_cfg

from mmvfm.models.uniperceiver import UNIPERCEIVER_TASKS, UniPerceiverTask
from mmvfm.models.uniperceiver.task_cfg import task_types
from mmvfm.models.uniperceiver.tasks import (
    CaptioningTask,
    ClassificationTask,
    RegionTask,
    RetrievalTask,
)

pytestmark = pytest.mark.usefixtures('one_thread')


def test_the_registered_types():
    assert task_types()[:5] == (
        'classification',
        'retrieval',
        'captioning',
        'detection',
        'instance_segmentation',
    )
    assert UNIPERCEIVER_TASKS.get('classification') is ClassificationTask
    assert UNIPERCEIVER_TASKS.get('retrieval') is RetrievalTask
    assert UNIPERCEIVER_TASKS.get('captioning') is CaptioningTask
    assert UNIPERCEIVER_TASKS.get('detection') is RegionTask
    assert UNIPERCEIVER_TASKS.get('instance_segmentation') is RegionTask


@UNIPERCEIVER_TASKS.register_module('_image_text_match', force=True)
class _MatchTask(UniPerceiverTask):
    """A test-only type: image vs its own caption's representation."""

    checked = []

    @classmethod
    def check_cfg(cls, name, cfg):
        cfg.setdefault('margin', 0.0)
        return cfg

    @classmethod
    def check_model(cls, model, names):
        cls.checked.append(list(names))

    def loss(self, model, inputs, data_samples):
        images = model.represent_images(inputs, self.name)
        texts = model.represent_texts(
            [s.gt_caption[0] for s in data_samples], self.name
        )
        cos = (images * texts).sum(-1)
        return dict(loss=(1 - cos).mean(), cos=cos.mean().detach())

    def predict(self, model, inputs, data_samples):
        images = model.represent_images(inputs, self.name)
        for sample, embed in zip(data_samples, images):
            sample.set_field(embed, 'img_embed')
        return data_samples


def test_a_new_type_is_a_registered_class(tokenizer_file):  # noqa: F811
    _MatchTask.checked.clear()
    cfg = base_cfg(
        tokenizer_file,
        m1=dict(type='_image_text_match', loss_weight=0.5),
        m2=dict(type='_image_text_match'),
    )
    torch.manual_seed(0)
    model = MODELS.build(cfg).double()
    assert _MatchTask.checked == [['m1', 'm2']]  # once, all its tasks
    assert model.task_cfgs['m1']['margin'] == 0.0
    assert model.task_cfgs['m1']['candidate_chunk'] == 1024  # common keys
    images = _images(2)
    losses = model(images, _samples(CAPTIONS[:2]), 'loss', task='m1')
    assert list(losses) == ['m1.loss', 'm1.cos', 'logit_scale']
    raw = model.task_types['m1'].loss(model, images, _samples(CAPTIONS[:2]))
    torch.testing.assert_close(losses['m1.loss'], 0.5 * raw['loss'])
    torch.testing.assert_close(losses['m1.cos'], raw['cos'])  # not a loss
    out = model(images, _samples(CAPTIONS[:2]), 'predict', task='m2')
    assert out[0].img_embed.shape == (16,)
    assert model.task_uses_collective('m1') is False


def test_one_device_for_what_the_model_makes(tokenizer_file):  # noqa: F811
    model = _model(tokenizer_file)
    assert model.device == model.loss_module.logit_scale.device
    ids, pad = model.encode_texts(CAPTIONS[:2])
    assert ids.device == pad.device == model.device
    assert model.word_ids().device == model.device
