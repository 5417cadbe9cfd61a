# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2, part 1: the unified objective by hand, the decoder's
masks and attribute routing, each task's loss against its equation, the
retrieval gather across 2 gloo ranks, generation, and the bad inputs."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_gloo_ranks
from mmdet.registry import MODELS

from mmvfm.models.language import coco_captions, train_bpe
from mmvfm.models.uniperceiver import (
    AttributeMoEFFN,
    TaskAgnosticDecoder,
    UnifiedMLELoss,
)
from mmvfm.utils import register_all_modules

pytestmark = pytest.mark.usefixtures('one_thread')
register_all_modules()

CLASSES = ['circle', 'square', 'triangle']
CAPTIONS = [
    'a small red circle in the top left',
    'two large blue squares in the center of the image',
    'a green triangle',
    'a ring and a cross',
]


@pytest.fixture(scope='module')
def tokenizer_file(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tok') / 'bpe.json')
    train_bpe(
        coco_captions(f'{toy_root}/annotations/captions_train.json'),
        out,
        vocab_size=300,
    )
    return out


def _cfg(tokenizer_file, causal=True, moe=None, **tasks):
    tasks = tasks or dict(
        cls=dict(type='classification', classes=CLASSES),
        cap=dict(type='captioning', decode_cfg=dict(max_length=6)),
        ret=dict(type='retrieval'),
    )
    return dict(
        type='UniPerceiverV2',
        backbone=dict(
            type='mmpretrain.VisionTransformer',
            arch=dict(
                embed_dims=16,
                num_layers=1,
                num_heads=2,
                feedforward_channels=32,
            ),
            img_size=32,
            patch_size=8,
            out_type='featmap',
            with_cls_token=False,
        ),
        image_channels=16,
        num_global=2,
        global_heads=2,
        text_encoder=dict(
            type='TextTransformer',
            vocab_size=300,
            width=16,
            depth=1,
            num_heads=2,
            max_length=24,
            causal=causal,
        ),
        tokenizer=dict(
            type='BPETokenizer',
            file=tokenizer_file,
            vocab_size=300,
            max_length=24,
        ),
        decoder=dict(
            type='TaskAgnosticDecoder', dims=16, depth=2, num_heads=2, moe=moe
        ),
        tasks=tasks,
    )


def _model(tokenizer_file, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MODELS.build(_cfg(tokenizer_file, **kwargs)).double()
    model.eval()  # no dropout anywhere: train() changes nothing
    return model


def _samples(captions=None, labels=None):
    from mmengine.structures import BaseDataElement

    captions = captions or CAPTIONS
    out = []
    for i, cap in enumerate(captions):
        s = BaseDataElement()
        s.set_field([cap], 'gt_caption')
        if labels is not None:
            s.set_field(torch.tensor([labels[i]]), 'gt_label')
        out.append(s)
    return out


def _images(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)


# ------------------------------------------------------------- objective
def test_unified_objective_by_hand():
    """2-d unit vectors at known angles: cos is exact, so is the loss."""
    loss = UnifiedMLELoss(init_temperature=0.5).double()
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    c = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64
    )
    cos = [[1.0, 0.0, -math.sqrt(0.5)], [0.0, 1.0, math.sqrt(0.5)]]
    targets = torch.tensor([0, 2])
    nll = []
    for row, t in zip(cos, targets.tolist()):
        z = [2.0 * v for v in row]  # 1 / tau = 2
        nll.append(-(z[t] - math.log(sum(math.exp(v) for v in z))))
    assert float(loss(q, c, targets)) == pytest.approx(sum(nll) / 2)
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert float(loss(q, c, targets, w)) == pytest.approx(nll[0])
    # the temperature is clamped at max_scale
    clamped = UnifiedMLELoss(init_temperature=0.01, max_scale=100.0)
    with torch.no_grad():
        clamped.logit_scale.fill_(10.0)
    assert float(clamped.scale) == pytest.approx(100.0)
    with pytest.raises(ValueError, match='1 candidate'):
        loss(q[:1], c[:1], targets[:1])


def test_two_task_toy_batch_by_hand(tokenizer_file):
    """One model, a classification batch and a retrieval batch: each loss
    is the cross-entropy of cos / tau computed here from the model's own
    representations, with the task weight and no sampling ratio."""
    model = _model(
        tokenizer_file,
        cls=dict(type='classification', classes=CLASSES, loss_weight=0.5),
        ret=dict(type='retrieval', gather=True),
    )
    images = _images(3)
    labels = [2, 0, 1]
    with torch.no_grad():
        got = model.loss(images, _samples(CAPTIONS[:3], labels), 'cls')
        a = model.represent_images(images, 'cls')
        b = model.represent_texts(CLASSES, 'cls')
        scale = math.exp(math.log(1 / 0.07))
        logits = scale * a @ b.t()
        ref = F.cross_entropy(logits, torch.tensor(labels))
        assert float(got['cls.loss']) == pytest.approx(0.5 * float(ref))

        got = model.loss(images, _samples(CAPTIONS[:3]), 'ret')
        a = model.represent_images(images, 'ret')
        t = model.represent_texts(CAPTIONS[:3], 'ret')
        eye = torch.arange(3)
        ref = (
            F.cross_entropy(scale * a @ t.t(), eye)
            + F.cross_entropy(scale * t @ a.t(), eye)
        ) / 2
        assert float(got['ret.loss']) == pytest.approx(float(ref))
    # representations are unit vectors; the tasks differ only in routing
    assert torch.allclose(a.norm(dim=-1), torch.ones(3, dtype=a.dtype))


def test_captioning_loss_and_causality(tokenizer_file):
    model = _model(tokenizer_file)
    images = _images(2)
    caps = CAPTIONS[:2]
    with torch.no_grad():
        got = float(model.loss(images, _samples(caps), 'cap')['cap.loss'])
        ids, pad = model.encode_texts(caps)
        image = model.image_tokens(images)
        out = model.caption_outputs(image, ids[:, :-1], 'cap')
        words = model.word_ids().tolist()
        vocab = model.vocab_candidates('cap')
        scale = model.loss_module.scale
        logits = scale * F.normalize(out, dim=-1) @ vocab.t()
        nll, count = 0.0, 0
        for n in range(2):
            for t in range(ids.shape[1] - 1):
                target = int(ids[n, t + 1])
                if pad[n, t + 1]:
                    continue
                row = logits[n, t]
                nll -= float(row[words.index(target)] - row.logsumexp(0))
                count += 1
        assert got == pytest.approx(nll / count)
        # position t never sees caption tokens after it
        changed = ids[:, :-1].clone()
        changed[:, 3:] = 7
        out2 = model.caption_outputs(image, changed, 'cap')
        assert torch.allclose(out[:, :3], out2[:, :3], atol=1e-12)
        assert not torch.allclose(out[:, 3:], out2[:, 3:])


def test_vocabulary_candidates_are_single_words(tokenizer_file):
    from mmvfm.models.language.bpe_tokenizer import BOS, EOS, SPECIAL_TOKENS

    model = _model(tokenizer_file)
    words = model.word_ids().tolist()
    assert EOS in words and len(words) == 300 - len(SPECIAL_TOKENS) + 1
    assert not {0, BOS} & set(words)
    with torch.no_grad():
        vocab = model.vocab_candidates('cap')
        one = model.decoder.represent(
            model.text_tokens(torch.tensor([[BOS, 42]])),
            torch.full((2,), 2),
            model.task_index['cap'],
        )
    assert vocab.shape == (len(words), 16)
    assert torch.isfinite(vocab).all()
    assert torch.allclose(vocab[words.index(42)], one[0], atol=1e-12)


# -------------------------------------------------------------- decoder
def test_decoder_masks_and_spe():
    torch.manual_seed(0)
    dec = TaskAgnosticDecoder(dims=8, depth=2, num_heads=2).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    modality = torch.tensor([1, 1, 2, 2, 2])
    out = dec(x, modality)
    assert out.shape == (2, 6, 8)
    # a padded key changes nothing for the others
    pad = torch.tensor([[False] * 4 + [True]] * 2)
    a = dec(x, modality, key_padding_mask=pad)
    y = x.clone()
    y[:, 4] = 100.0
    b = dec(y, modality, key_padding_mask=pad)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-12)
    # the modality type embedding matters
    assert not torch.allclose(dec(x, torch.ones(5).long())[:, 0], out[:, 0])
    with pytest.raises(ValueError, match='tokens have 4 dims'):
        dec(x[..., :4], modality)


def test_moe_tokens_reach_the_expert_their_attributes_select():
    torch.manual_seed(0)
    moe = AttributeMoEFFN(
        8, 16, num_experts=4, attributes=dict(modality=3, task=3), top_k=1
    ).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    attrs = dict(
        modality=torch.tensor([[0, 1, 1, 2, 2, 2]] * 2),
        task=torch.tensor([[1] * 6, [2] * 6]),
    )
    weights, experts = moe.route(attrs)
    # same attributes, same expert, whatever the content
    assert experts[0, 1] == experts[0, 2]
    assert experts[0, 3] == experts[0, 4] == experts[0, 5]
    out = moe(x, attrs)
    for n in range(2):
        for s in range(6):
            m, t = int(attrs['modality'][n, s]), int(attrs['task'][n, s])
            gate = moe.gate(
                moe.attr_embed['modality'].weight[m]
                + moe.attr_embed['task'].weight[t]
            )
            e = int(gate.argmax())
            assert int(experts[n, s, 0]) == e
            ref = moe.experts[e](x[n, s])
            assert torch.allclose(out[n, s], ref, atol=1e-12)
    # several experts are used across these attributes
    assert len(set(experts.flatten().tolist())) > 1
    with pytest.raises(KeyError, match='task'):
        moe(x, dict(modality=attrs['modality']))


def test_moe_in_the_model_routes_by_task(tokenizer_file):
    model = _model(tokenizer_file, moe=dict(num_experts=3, top_k=1))
    layer = model.decoder.layers[0].ffn
    assert isinstance(layer, AttributeMoEFFN)
    assert layer.attr_embed['task'].num_embeddings == 3
    images = _images(2)
    with torch.no_grad():
        a = model.represent_images(images, 'cls')
        b = model.represent_images(images, 'ret')
    assert a.shape == (2, 16)
    routes = {
        t: layer.route(
            dict(
                modality=torch.tensor([[1]]),
                task=torch.tensor([[model.task_index[t]]]),
            )
        )[1].item()
        for t in ('cls', 'cap', 'ret')
    }
    if routes['cls'] != routes['ret']:
        assert not torch.allclose(a, b)


# ------------------------------------------------------------- generation
def test_generation_greedy_is_beam_one_and_never_special(tokenizer_file):
    from mmvfm.models.language.bpe_tokenizer import EOS, PAD, SPECIAL_TOKENS

    model = _model(tokenizer_file)
    images = _images(2)
    with torch.no_grad():
        greedy = model.generate(images, 'cap')
        model.task_cfgs['cap']['decode_cfg'].update(mode='beam', beam_size=1)
        beam = model.generate(images, 'cap')
        model.task_cfgs['cap']['decode_cfg'].update(beam_size=3)
        beam3 = model.generate(images, 'cap')
    assert torch.equal(greedy, beam)
    assert greedy.shape[0] == 2 and greedy.shape[1] <= 6
    assert beam3.shape[0] == 2
    special = set(range(len(SPECIAL_TOKENS))) - {EOS, PAD}
    assert not special & set(greedy.flatten().tolist())
    # the first step is the argmax of cos / tau over the candidates
    with torch.no_grad():
        out = model.caption_outputs(
            model.image_tokens(images), torch.full((2, 1), 1), 'cap'
        )[:, -1]
        logits = model.loss_module.logits(out, model.vocab_candidates('cap'))
    assert torch.equal(greedy[:, 0], model.word_ids()[logits.argmax(-1)])


def test_min_length_bans_eos_until_reached(tokenizer_file, monkeypatch):
    """A model that always prefers <eos> (its logit +100) ends every caption
    at once; with min_length=3 the first 3 tokens are words, the 4th
    <eos>, in greedy and beam search alike."""
    from mmvfm.models.language.bpe_tokenizer import EOS

    model = _model(tokenizer_file)
    eos_col = model.word_ids() == EOS
    logits = model.loss_module.logits
    monkeypatch.setattr(
        model.loss_module,
        'logits',
        lambda q, c: logits(q, c) + 100.0 * eos_col.to(q.dtype),
    )
    images = _images(2)
    decode = model.task_cfgs['cap']['decode_cfg']
    for mode in ('greedy', 'beam'):
        decode.update(mode=mode, min_length=0)
        with torch.no_grad():
            assert model.generate(images, 'cap').tolist() == [[EOS], [EOS]]
        decode.update(min_length=3)
        with torch.no_grad():
            ids = model.generate(images, 'cap')
        assert ids.shape == (2, 4), mode
        assert (ids[:, 3] == EOS).all() and (ids[:, :3] != EOS).all(), mode
    bad = dict(type='captioning', decode_cfg=dict(max_length=6, min_length=6))
    with pytest.raises(ValueError, match='decode_cfg.min_length'):
        MODELS.build(_cfg(tokenizer_file, cap=bad))
    typo = dict(type='captioning', decode_cfg=dict(min_len=2))
    with pytest.raises(ValueError, match=r"unknown keys \['min_len'\]"):
        MODELS.build(_cfg(tokenizer_file, cap=typo))


def test_predict_fills_each_metric_field(tokenizer_file):
    model = _model(tokenizer_file)
    images = _images(2)
    with torch.no_grad():
        cls = model.predict(images, _samples(CAPTIONS[:2], [0, 1]), 'cls')
        ret = model.predict(images, _samples(CAPTIONS[:2]), 'ret')
        cap = model.predict(images, _samples(CAPTIONS[:2]), 'cap')
    assert cls[0].pred_score.shape == (3,)
    assert float(cls[0].pred_score.sum()) == pytest.approx(1.0)
    assert ret[0].img_embed.shape == (16,)
    assert ret[1].text_embeds.shape == (1, 16)
    assert isinstance(cap[0].pred_caption, str)


# ---------------------------------------------------------- 2 gloo ranks
def _rank_worker(rank, tokenizer_file):
    model = _model(tokenizer_file)
    model.train()
    images = _images(4)[2 * rank : 2 * rank + 2]
    loss = model.loss(
        images, _samples(CAPTIONS[2 * rank : 2 * rank + 2]), 'ret'
    )
    loss['ret.loss'].backward()
    return (
        float(loss['ret.loss']),
        model.image_proj[0].weight.grad.flatten().tolist(),
        float(model.loss_module.logit_scale.grad),
    )


def test_retrieval_gathers_across_ranks_with_gradient(tokenizer_file):
    """Two ranks of 2 pairs each, candidates gathered with gradient: the
    mean of their losses and (as DDP averages them) of their gradients
    equal one process with the 4 pairs."""
    results = run_gloo_ranks(_rank_worker, tokenizer_file)
    model = _model(tokenizer_file)
    model.train()
    loss = model.loss(_images(4), _samples(CAPTIONS), 'ret')['ret.loss']
    loss.backward()
    mean_loss = (results[0][0] + results[1][0]) / 2
    assert mean_loss == pytest.approx(float(loss), rel=1e-9)
    grad = torch.tensor(results[0][1], dtype=torch.float64) + torch.tensor(
        results[1][1], dtype=torch.float64
    )
    ref = model.image_proj[0].weight.grad.flatten()
    assert torch.allclose(grad / 2, ref, atol=1e-10)
    scale = (results[0][2] + results[1][2]) / 2
    assert scale == pytest.approx(float(model.loss_module.logit_scale.grad))
    # a rank's own loss differs from the full one: the gather did something
    assert results[0][0] != pytest.approx(float(loss))


# ------------------------------------------------------------ bad input
def test_bad_tasks_are_refused_at_build(tokenizer_file):
    with pytest.raises(ValueError, match='tasks.cls.classes: an empty'):
        MODELS.build(
            _cfg(tokenizer_file, cls=dict(type='classification', classes=[]))
        )
    with pytest.raises(ValueError, match='repeated names'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                cls=dict(type='classification', classes=['a', 'a']),
            )
        )
    with pytest.raises(ValueError, match='tasks.x.type'):
        MODELS.build(_cfg(tokenizer_file, x=dict(type='vqa')))
    with pytest.raises(ValueError, match='needs a causal text encoder'):
        MODELS.build(_cfg(tokenizer_file, causal=False))
    with pytest.raises(ValueError, match='decode_cfg.mode'):
        MODELS.build(
            _cfg(
                tokenizer_file,
                cap=dict(type='captioning', decode_cfg=dict(mode='sample')),
            )
        )


def test_candidates_that_cannot_be_encoded_name_the_class(tokenizer_file):
    long = ' '.join(['triangle'] * 30)
    model = _model(
        tokenizer_file,
        cls=dict(type='classification', classes=['circle', long]),
    )
    with pytest.raises(ValueError, match=r"class 'triangle triangle"):
        model.loss(_images(2), _samples(CAPTIONS[:2], [0, 1]), 'cls')


def test_retrieval_batch_of_one_is_refused(tokenizer_file):
    model = _model(tokenizer_file)
    with pytest.raises(ValueError, match='global retrieval batch of 1'):
        model.loss(_images(1), _samples(CAPTIONS[:1]), 'ret')


def test_missing_captions_and_labels_are_named(tokenizer_file):
    model = _model(tokenizer_file)
    from mmengine.structures import BaseDataElement

    with pytest.raises(ValueError, match='no `gt_caption`'):
        model.loss(_images(2), [BaseDataElement()] * 2, 'cap')
    with pytest.raises(ValueError, match="task 'cls' sample 0 has no"):
        model.loss(_images(2), _samples(CAPTIONS[:2]), 'cls')
    with pytest.raises(ValueError, match='label 5, the task 3 classes'):
        model.loss(_images(2), _samples(CAPTIONS[:2], [5, 0]), 'cls')
    with pytest.raises(ValueError, match='needs the task'):
        model(_images(2), None, 'loss')


def test_uniperceiver_vocab_checked_at_build(tmp_path):
    # the file does not exist: the mismatch is found before it is read
    cfg = _cfg(str(tmp_path / 'absent.json'))
    model = MODELS.build(copy.deepcopy(cfg))
    assert model.tokenizer_cfg['vocab_size'] == 300
    del cfg['tokenizer']['vocab_size']
    assert MODELS.build(copy.deepcopy(cfg)).tokenizer_cfg['vocab_size'] == 300
    cfg['tokenizer']['vocab_size'] = 512
    with pytest.raises(
        ValueError,
        match='tokenizer.vocab_size 512 differs from '
        'text_encoder.vocab_size 300',
    ):
        MODELS.build(cfg)
