# Copyright (c) mmvfm contributors. All rights reserved.
"""Retrieval recall on small literal similarity matrices."""

import numpy as np
import pytest
import torch
from mmdet.registry import METRICS
from mmengine.evaluator import Evaluator
from mmengine.structures import BaseDataElement

from mmvfm.evaluation import retrieval_recall

# 3 images, 5 texts: image 0 has texts 0, 1; image 1 text 2; image 2
# texts 3, 4 (K_i = 2, 1, 2)
TXT_TO_IMG = torch.tensor([0, 0, 1, 2, 2])
SIM = torch.tensor(
    [
        # t0   t1   t2   t3   t4
        [0.9, 0.1, 0.8, 0.3, 0.2],  # img 0
        [0.7, 0.6, 0.5, 0.9, 0.8],  # img 1
        [0.1, 0.2, 0.3, 0.4, 0.3],  # img 2
    ],
    dtype=torch.float64,
)


def test_recall_both_directions():
    # i2t, rank of the best ground-truth text = wrong texts scoring >= it:
    #   img 0: best 0.9 (t0), none higher            -> rank 0
    #   img 1: t2 = 0.5; t0, t1, t3, t4 are higher   -> rank 4
    #   img 2: best 0.4 (t3), none higher            -> rank 0
    # t2i, rank of the text's image = other images scoring >= it:
    #   t0 column [.9 .7 .1], image 0 -> rank 0
    #   t1 column [.1 .6 .2], image 0 -> rank 2
    #   t2 column [.8 .5 .3], image 1 -> rank 1
    #   t3 column [.3 .9 .4], image 2 -> rank 1
    #   t4 column [.2 .8 .3], image 2 -> rank 1
    # k = 5 is at least the number of candidates for every query
    # (3 images; 4 or 5 texts): R@5 = 100
    out = retrieval_recall(SIM, TXT_TO_IMG, topk=(1, 2, 5))
    expected = {
        'i2t_R@1': 200 / 3,
        'i2t_R@2': 200 / 3,
        'i2t_R@5': 100.0,
        't2i_R@1': 20.0,
        't2i_R@2': 80.0,
        't2i_R@5': 100.0,
    }
    expected['R_mean'] = (200 / 3 * 2 + 100 + 20 + 80 + 100) / 6
    assert list(out) == list(expected)
    assert out == pytest.approx(expected, rel=1e-12)
    # float32 gives the same; an int topk works
    out32 = retrieval_recall(SIM.float(), TXT_TO_IMG, topk=1)
    assert out32 == pytest.approx(
        {'i2t_R@1': 200 / 3, 't2i_R@1': 20.0, 'R_mean': (200 / 3 + 20) / 2}
    )


def test_default_topk_and_large_k():
    out = retrieval_recall(SIM, TXT_TO_IMG)
    assert list(out) == [
        'i2t_R@1',
        'i2t_R@5',
        'i2t_R@10',
        't2i_R@1',
        't2i_R@5',
        't2i_R@10',
        'R_mean',
    ]
    # k = 10 > 5 texts and > 3 images: every ground truth is in the top 10
    assert out['i2t_R@10'] == 100.0
    assert out['t2i_R@10'] == 100.0


def test_ties_are_pessimistic():
    # all equal: the wrong candidate ranks first in both directions
    sim = torch.full((2, 2), 0.5, dtype=torch.float64)
    out = retrieval_recall(sim, torch.tensor([0, 1]), topk=(1, 2))
    assert out == {
        'i2t_R@1': 0.0,
        'i2t_R@2': 100.0,
        't2i_R@1': 0.0,
        't2i_R@2': 100.0,
        'R_mean': 50.0,
    }
    # image 0's two captions tie with each other (0.8), a wrong one is
    # lower: rank 0. image 1's caption (0.3) ties with a wrong one (t0)
    # and a wrong one is higher (t1): rank 2
    sim = torch.tensor(
        [
            [0.8, 0.8, 0.1],
            [0.3, 0.4, 0.3],
        ],
        dtype=torch.float64,
    )
    out = retrieval_recall(sim, torch.tensor([0, 0, 1]), topk=(1, 2, 3))
    assert [out[f'i2t_R@{k}'] for k in (1, 2, 3)] == [50.0, 50.0, 100.0]
    # t2i: t0 [.8 .3] rank 0, t1 [.8 .4] rank 0, t2 [.1 .3] rank 0
    assert [out[f't2i_R@{k}'] for k in (1, 2, 3)] == [100.0] * 3


def test_grad_and_no_grad():
    sim = SIM.clone().requires_grad_(True)
    out = retrieval_recall(sim, TXT_TO_IMG, topk=(1,))
    with torch.no_grad():
        assert retrieval_recall(sim, TXT_TO_IMG, topk=(1,)) == out
    assert out['t2i_R@1'] == pytest.approx(20.0)


@pytest.mark.parametrize(
    'sim, txt_to_img, topk, match',
    [
        (SIM, torch.tensor([0, 0, 0, 2, 2]), 1, r'have no text, e\.g\. image'),
        (SIM, torch.tensor([0, 1, 2]), 1, r'txt_to_img must be a \(5,\)'),
        (SIM, torch.tensor([0, 0, 1, 2, 3]), 1, r'must be in \[0, 3\)'),
        (SIM, TXT_TO_IMG.float(), 1, 'must be an integer tensor'),
        (SIM[0], TXT_TO_IMG, 1, 'must be a 2-D tensor'),
        (SIM.long(), TXT_TO_IMG, 1, 'must be a float tensor'),
        (SIM, TXT_TO_IMG, (0, 1), 'topk must be positive ints'),
        (SIM, TXT_TO_IMG, (), 'topk must be positive ints'),
        (
            torch.tensor([[float('nan'), 0.0]]),
            torch.tensor([0, 0]),
            1,
            'NaN or infinite',
        ),
    ],
)
def test_recall_errors(sim, txt_to_img, topk, match):
    with pytest.raises(ValueError, match=match):
        retrieval_recall(sim, txt_to_img, topk=topk)


# D = 2 embeddings: images i0 = (1, 0), i1 = (0, 1), i2 = (3, 3);
# texts of i0: t0 = (5, 0), t1 = (1, 1); of i1: t2 = (0, 0.5); of i2:
# t3 = (2, 2.2)
IMGS = [[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]
TXTS = [[[5.0, 0.0], [1.0, 1.0]], [[0.0, 0.5]], [[2.0, 2.2]]]


def _samples():
    return [
        BaseDataElement(
            img_embed=torch.tensor(img), text_embeds=torch.tensor(txt)
        )
        for img, txt in zip(IMGS, TXTS)
    ]


def test_metric_cosine_through_evaluator():
    # cosine (rows i0, i1, i2; columns t0..t3):
    #   i0 [1,    .7071, 0,     .6727]
    #   i1 [0,    .7071, 1,     .7399]
    #   i2 [.7071, 1,    .7071, .9989]
    # i2t ranks: i0 0, i1 0, i2 1 (t1 = 1 > .9989)
    # t2i ranks: t0 0, t1 2 (i1 ties with i0 at .7071, i2 is higher),
    #            t2 0, t3 0
    evaluator = Evaluator(
        [METRICS.build(dict(type='RetrievalMetric', topk=(1, 2, 3)))]
    )
    samples = _samples()
    evaluator.process(samples[:2])
    evaluator.process(samples[2:])
    out = evaluator.evaluate(3)
    expected = {
        'retrieval/i2t_R@1': 200 / 3,
        'retrieval/i2t_R@2': 100.0,
        'retrieval/i2t_R@3': 100.0,
        'retrieval/t2i_R@1': 75.0,
        'retrieval/t2i_R@2': 75.0,
        'retrieval/t2i_R@3': 100.0,
        'retrieval/R_mean': (200 / 3 + 200 + 75 + 75 + 100) / 6,
    }
    assert out == pytest.approx(expected, rel=1e-12)


def test_metric_dot_product_numpy_and_cpu_results():
    # dot products:
    #   i0 [5,  1, 0,   2  ]
    #   i1 [0,  1, 0.5, 2.2]
    #   i2 [15, 6, 1.5, 12.6]
    # i2t ranks: i0 0; i1 2 (t1, t3 above 0.5); i2 1 (t0 above 12.6)
    # t2i ranks: t0 1 (i2); t1 2 (i1 ties, i2 above); t2 1 (i2); t3 0
    metric = METRICS.build(
        dict(type='RetrievalMetric', topk=(1, 2, 3), normalize=False)
    )
    metric.process(
        None,
        [
            dict(
                img_embed=np.array(img, dtype=np.float32),
                text_embeds=np.array(txt, dtype=np.float32),
            )
            for img, txt in zip(IMGS, TXTS)
        ],
    )
    for result in metric.results:
        assert result['img_embed'].device.type == 'cpu'
        assert result['text_embeds'].dim() == 2
    out = metric.evaluate(3)
    assert out == pytest.approx(
        {
            'retrieval/i2t_R@1': 100 / 3,
            'retrieval/i2t_R@2': 200 / 3,
            'retrieval/i2t_R@3': 100.0,
            'retrieval/t2i_R@1': 25.0,
            'retrieval/t2i_R@2': 75.0,
            'retrieval/t2i_R@3': 100.0,
            'retrieval/R_mean': (100 / 3 + 200 / 3 + 100 + 200) / 6,
        },
        rel=1e-12,
    )


def test_metric_one_caption_as_vector():
    metric = METRICS.build(dict(type='RetrievalMetric', topk=1))
    metric.process(
        None,
        [
            dict(img_embed=torch.tensor([1.0, 0.0]), text_embeds=[1.0, 0.1]),
            dict(img_embed=torch.tensor([0.0, 1.0]), text_embeds=[0.1, 1.0]),
        ],
    )
    assert metric.results[0]['text_embeds'].shape == (1, 2)
    assert metric.evaluate(2) == {
        'retrieval/i2t_R@1': 100.0,
        'retrieval/t2i_R@1': 100.0,
        'retrieval/R_mean': 100.0,
    }


def test_metric_errors():
    metric = METRICS.build(dict(type='RetrievalMetric'))
    img, txt = torch.zeros(4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match='no "img_embed"'):
        metric.process(None, [dict(text_embeds=txt)])
    with pytest.raises(ValueError, match='no "text_embeds"'):
        metric.process(None, [dict(img_embed=img)])
    with pytest.raises(ValueError, match=r'\(K, D\) with K >= 1'):
        metric.process(None, [dict(img_embed=img, text_embeds=txt[:0])])
    with pytest.raises(ValueError, match=r'\(K, D\) with K >= 1'):
        metric.process(None, [dict(img_embed=txt, text_embeds=txt)])
    with pytest.raises(ValueError, match='differ in size'):
        metric.process(None, [dict(img_embed=img, text_embeds=txt[:, :3])])
    with pytest.raises(ValueError, match='must be a float tensor'):
        metric.process(None, [dict(img_embed=img.long(), text_embeds=txt)])
    with pytest.raises(ValueError, match='no data samples'):
        metric.compute_metrics([])
    with pytest.raises(ValueError, match=r'embedding sizes differ: \[2, 4\]'):
        metric.compute_metrics(
            [
                dict(img_embed=img, text_embeds=txt),
                dict(img_embed=img[:2], text_embeds=txt[:, :2]),
            ]
        )
    with pytest.raises(ValueError, match='topk must be positive ints'):
        METRICS.build(dict(type='RetrievalMetric', topk=(1, 0)))


def _naive_recall(sim, txt_to_img, topk):
    """The definitions, one query at a time."""
    sim, owner = sim.tolist(), txt_to_img.tolist()
    n_img, n_txt = len(sim), len(owner)
    i2t, t2i = [], []
    for i in range(n_img):
        best = max(sim[i][j] for j in range(n_txt) if owner[j] == i)
        i2t.append(
            sum(sim[i][j] >= best for j in range(n_txt) if owner[j] != i)
        )
    for j in range(n_txt):
        gt = sim[owner[j]][j]
        t2i.append(sum(sim[i][j] >= gt for i in range(n_img) if i != owner[j]))
    out = {}
    for name, ranks in (('i2t', i2t), ('t2i', t2i)):
        for k in topk:
            out[f'{name}_R@{k}'] = 100 * sum(r < k for r in ranks) / len(ranks)
    out['R_mean'] = sum(out.values()) / len(out)
    return out


def test_chunked_matches_definition(monkeypatch):
    from mmvfm.evaluation.metrics import retrieval_metric

    gen = torch.Generator().manual_seed(0)
    # 7 images with 1-3 texts each; scores on a coarse grid: many ties
    counts = torch.randint(1, 4, (7,), generator=gen)
    txt_to_img = torch.repeat_interleave(torch.arange(7), counts)
    sim = torch.randint(0, 5, (7, len(txt_to_img)), generator=gen) / 4
    sim = sim.double()
    expected = _naive_recall(sim, txt_to_img, (1, 2, 5))
    assert retrieval_recall(sim, txt_to_img, (1, 2, 5)) == pytest.approx(
        expected, rel=1e-12
    )
    monkeypatch.setattr(retrieval_metric, '_CHUNK', 3)  # chunks 3, 3, 1
    assert retrieval_recall(sim, txt_to_img, (1, 2, 5)) == pytest.approx(
        expected, rel=1e-12
    )


def test_caption_and_retrieval_in_one_evaluator():
    """One evaluator loop over several tasks' metrics: prefixed keys."""
    evaluator = Evaluator(
        [
            METRICS.build(dict(type='CaptionMetric')),
            METRICS.build(dict(type='RetrievalMetric', topk=(1,))),
        ]
    )
    samples = _samples()
    for sample, caption in zip(samples, ['a cat', 'a dog', 'two birds']):
        sample.set_field(caption, 'pred_caption')
        sample.set_field([caption, 'an animal'], 'gt_caption')
    evaluator.process(samples)
    out = evaluator.evaluate(3)
    assert sorted(out) == [
        'caption/BLEU-1',
        'caption/BLEU-2',
        'caption/BLEU-3',
        'caption/BLEU-4',
        'caption/CIDEr-D',
        'retrieval/R_mean',
        'retrieval/i2t_R@1',
        'retrieval/t2i_R@1',
    ]
    assert out['caption/BLEU-1'] == pytest.approx(1.0, rel=1e-6)
    assert out['retrieval/i2t_R@1'] == pytest.approx(200 / 3)
