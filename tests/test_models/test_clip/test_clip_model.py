# Copyright (c) mmvfm contributors. All rights reserved.
"""The CLIP-style model: its loss is the symmetric InfoNCE of its own
features, predictions carry normalised embeddings and prompt-ensemble
zero-shot scores, it builds without the tokenizer file, runs offline, and
bad configs or samples fail naming the field."""

import copy
import socket

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VIT
from mmdet.registry import MODELS
from mmengine.structures import BaseDataElement
from mmpretrain.structures import DataSample

from mmvfm.models.language import train_bpe

CAPTIONS = [
    'a large red circle at the top left',
    'a small blue square in the middle',
    'a green triangle and a red ring',
    'two shapes: a cross and a circle',
]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f'the text path tried to connect to {address}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)


@pytest.fixture
def tokenizer_file(tmp_path):
    path = str(tmp_path / 'bpe.json')
    assert train_bpe(CAPTIONS * 4, path, vocab_size=300) == 300
    return path


def clip_cfg(tokenizer_file, **zero_shot):
    return dict(
        type='CLIP',
        image_encoder=dict(
            TINY_VIT, out_type='featmap', with_cls_token=False, init_cfg=None
        ),
        text_encoder=dict(
            type='TextTransformer',
            vocab_size=300,
            width=32,
            depth=1,
            num_heads=2,
            max_length=32,
            proj_dims=16,
        ),
        tokenizer=dict(type='BPETokenizer', file=tokenizer_file),
        embed_dims=16,
        zero_shot=dict(
            classes=['circle', 'square', 'ring'],
            templates=['a {}', 'an image of a {}'],
            **zero_shot,
        ),
    )


def build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg).double()


def samples(captions):
    out = []
    for caps in captions:
        s = DataSample()
        s.set_field(caps, 'gt_caption')
        out.append(s)
    return out


def test_builds_without_the_tokenizer_file(tmp_path):
    cfg = clip_cfg(str(tmp_path / 'missing.json'))
    with torch.device('meta'):
        model = MODELS.build(cfg)
    assert model.image_proj.weight.is_meta
    model = MODELS.build(cfg)  # on CPU too; the file is read at first use
    with pytest.raises(FileNotFoundError, match='missing.json'):
        model.extract_text_feat(['a circle'])


def test_loss_is_infonce_of_its_features(tokenizer_file, no_network):
    model = build(clip_cfg(tokenizer_file))
    imgs = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    caps = CAPTIONS[:3]
    loss = model.loss(imgs, samples([[c] for c in caps]))['loss_contrastive']
    # the equations, by hand
    i = F.normalize(model.extract_image_feat(imgs), dim=-1)
    t = F.normalize(model.extract_text_feat(caps), dim=-1)
    s = model.loss_module.logit_scale.exp()
    logits = s * i @ t.T
    log_i2t = logits.log_softmax(1).diagonal()
    log_t2i = logits.T.log_softmax(1).diagonal()
    expected = -(log_i2t.mean() + log_t2i.mean()) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.loss_module.logit_scale.grad is not None
    assert model.text_encoder.token_embed.weight.grad.abs().sum() > 0
    assert model.image_encoder.patch_embed.projection.weight.grad.abs().sum()


def test_loss_draws_one_of_each_images_captions(tokenizer_file):
    model = build(clip_cfg(tokenizer_file))
    imgs = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        seen.add(
            round(
                float(
                    model.loss(imgs, samples([CAPTIONS[:2], CAPTIONS[2:]]))[
                        'loss_contrastive'
                    ]
                ),
                8,
            )
        )
    assert 1 < len(seen) <= 4  # 2 x 2 caption choices
    with pytest.raises(ValueError, match='data sample 1 has no `gt_caption`'):
        model.loss(imgs, samples([['a'], []]))


def test_predict_embeddings_and_zero_shot(tokenizer_file, no_network):
    model = build(clip_cfg(tokenizer_file)).eval()
    imgs = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = model.predict(imgs, samples([CAPTIONS[:3], CAPTIONS[3]]))
    assert out[0].img_embed.shape == (16,)
    assert out[0].text_embeds.shape == (3, 16)
    assert out[1].text_embeds.shape == (1, 16)
    torch.testing.assert_close(
        out[0].text_embeds.norm(dim=-1), torch.ones(3, dtype=torch.float64)
    )
    # the prompt ensemble: mean of the normalised prompt features, renormed
    with torch.no_grad():
        per_class = []
        for name in ['circle', 'square', 'ring']:
            f = model.extract_text_feat([f'a {name}', f'an image of a {name}'])
            f = F.normalize(f, dim=-1).mean(0)
            per_class.append(F.normalize(f, dim=0))
        classifier = torch.stack(per_class)
        img = F.normalize(model.extract_image_feat(imgs), dim=-1)
        expected = (model.loss_module.scale * img @ classifier.T).softmax(-1)
    for k in range(2):
        torch.testing.assert_close(out[k].pred_score, expected[k])
        assert int(out[k].pred_label) == int(expected[k].argmax())
    # cached while evaluating, dropped on train()/eval()
    cached = model.class_embeddings()
    assert model.class_embeddings() is cached
    model.train()
    assert model._classifier is None
    # samples without captions (the zero-shot dataset) or no samples at all
    out = model.predict(imgs, [BaseDataElement(), BaseDataElement()])
    assert 'text_embeds' not in out[0] and out[0].pred_score.shape == (3,)
    assert len(model.predict(imgs)) == 2


def test_runs_under_the_runner_modes(tokenizer_file):
    model = build(clip_cfg(tokenizer_file))
    imgs = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert model(imgs, mode='tensor').shape == (2, 16)
    with pytest.raises(RuntimeError, match='invalid mode'):
        model(imgs, mode='bogus')


@pytest.mark.parametrize(
    'classes, templates, match',
    [
        (['circle', ''], None, r'classes\[1\]: empty class name'),
        (['circle', 'circle'], None, "'circle' appears twice"),
        (['circle ' * 20], None, r'classes\[0\].*over max_length=32'),
        (['circle'], ['a photo'], 'exactly one "{}"'),
        (['circle'], [], 'at least one template'),
    ],
)
def test_bad_class_names_and_templates(
    tokenizer_file, classes, templates, match
):
    cfg = clip_cfg(tokenizer_file)
    cfg['zero_shot']['classes'] = classes
    if templates is not None:
        cfg['zero_shot']['templates'] = templates
    with pytest.raises(ValueError, match=match):
        # templates are checked at build, class names at first use
        build(cfg).class_embeddings()


def test_bad_configs_fail_at_build(tokenizer_file):
    cfg = clip_cfg(tokenizer_file)
    bad = copy.deepcopy(cfg)
    bad['tokenizer']['vocab_size'] = 512
    with pytest.raises(ValueError, match='tokenizer.vocab_size 512'):
        MODELS.build(bad)
    bad = copy.deepcopy(cfg)
    bad['text_encoder']['proj_dims'] = 8
    with pytest.raises(ValueError, match='text_encoder outputs 8 dims'):
        MODELS.build(bad)
    bad = copy.deepcopy(cfg)
    bad['tokenizer']['max_length'] = 64
    with pytest.raises(ValueError, match='tokenizer.max_length 64'):
        MODELS.build(bad)
    bad = copy.deepcopy(cfg)
    bad['zero_shot'] = dict(names=['a'])
    with pytest.raises(ValueError, match='zero_shot takes `classes`'):
        MODELS.build(bad)
