# Copyright (c) mmvfm contributors. All rights reserved.
"""CaptionMetric: BLEU-1..4 and CIDEr-D against hand-computed values."""

import json
import math
import os.path as osp

import pytest
from mmdet.registry import METRICS
from mmengine.evaluator import Evaluator
from mmengine.structures import BaseDataElement

KEYS = ['BLEU-1', 'BLEU-2', 'BLEU-3', 'BLEU-4', 'CIDEr-D']


def _score(samples, **kwargs):
    metric = METRICS.build(dict(type='CaptionMetric', **kwargs))
    metric.process(None, samples)
    return metric.evaluate(len(samples))


def test_bleu_one_image_no_brevity_penalty():
    # candidate "a cat sat on the mat" (6 words) vs
    #   r1 "a cat sat on a mat", r2 "the cat is on the mat" (6 words each)
    # clipped n-gram matches / candidate n-grams:
    #   1-grams: a cat sat on the mat, all in r1 or r2         6/6
    #   2-grams: a cat, cat sat, sat on (r1), on the, the mat   5/5
    #   3-grams: a cat sat, cat sat on (r1), on the mat (r2);
    #            not "sat on the"                               3/4
    #   4-grams: a cat sat on (r1); not "cat sat on the",
    #            "sat on the mat"                               1/3
    # closest reference length 6 = candidate length: no brevity penalty
    out = _score(
        [
            dict(
                pred_caption='A cat sat on the mat.',  # tokenized first
                gt_caption=['a cat sat on a mat', 'The cat is on the mat.'],
            )
        ]
    )
    assert out['caption/BLEU-1'] == pytest.approx(1.0, rel=1e-6)
    assert out['caption/BLEU-2'] == pytest.approx(1.0, rel=1e-6)
    assert out['caption/BLEU-3'] == pytest.approx(0.75 ** (1 / 3), rel=1e-6)
    # (1 * 1 * 3/4 * 1/3) ** (1/4) = (1/4) ** (1/4) = sqrt(1/2)
    assert out['caption/BLEU-4'] == pytest.approx(0.5**0.5, rel=1e-6)
    # a single image: every idf is log(1/1) = 0
    assert out['caption/CIDEr-D'] == 0.0


def test_bleu_two_images_brevity_penalty():
    # image 1 as above: matches [6, 5, 3, 1] of [6, 5, 4, 3] n-grams,
    #   candidate length 6, closest reference length 6
    # image 2: "a dog" vs "a dog runs" (3), "the brown dog runs fast" (5):
    #   1-grams 2/2, 2-grams 1/1, no 3- or 4-grams; closest length 3
    # corpus: matches [8, 6, 3, 1] of [8, 6, 4, 3]; c = 8, r = 6 + 3 = 9
    # brevity penalty exp(1 - r / c) = exp(-1/8)
    bp = math.exp(-1 / 8)
    out = _score(
        [
            dict(
                pred_caption='a cat sat on the mat',
                gt_caption=['a cat sat on a mat', 'the cat is on the mat'],
            ),
            dict(
                pred_caption='a dog',
                gt_caption=['a dog runs', 'the brown dog runs fast'],
            ),
        ]
    )
    expected = [
        1.0 * bp,  # 8/8
        (1.0 * 1.0) ** (1 / 2) * bp,  # 8/8, 6/6
        (1.0 * 1.0 * 3 / 4) ** (1 / 3) * bp,  # ..., 3/4
        (1.0 * 1.0 * 3 / 4 * 1 / 3) ** (1 / 4) * bp,  # ..., 1/3
    ]
    got = [out[f'caption/BLEU-{n}'] for n in (1, 2, 3, 4)]
    assert got == pytest.approx(expected, rel=1e-6)
    assert got[3] == pytest.approx(0.6240195, abs=1e-7)


def test_cider_d_two_images():
    """CIDEr-D by hand: N = 2 images, L = log(2).

    Document frequencies over the references of each image:
    "a" is in both images (idf log(2/2) = 0), every other n-gram in one
    (idf log(2/1) = L); n-grams of no reference get idf log(2/1) = L too.
    Vectors g = tf * idf per n; lengths counted as in pycocoevalcap.

    Image 1: candidate "a dog a dog", refs "a dog", "a big dog runs".
      cand  n=1 {a: 0, dog: 2L}               |g| = 2L
            n=2 {a dog: 2L, dog a: L}          |g| = sqrt(5) L
      ref1  n=1 {a: 0, dog: L}                 |g| = L
            n=2 {a dog: L}                     |g| = L
            n=3, n=4 empty (similarity 0)
        clipped numerators: n=1 min(2L, L) * L = L^2 -> L^2 / (2L * L)
        = 1/2; n=2 min(2L, L) * L = L^2 -> 1 / sqrt(5);
        length penalty: 4 words vs 2 -> exp(-2^2 / (2 * 6^2))
      ref2  n=1 {a: 0, big: L, dog: L, runs: L} |g| = sqrt(3) L
            n=2 3 bigrams, none in cand -> 0; n=3, n=4 -> 0
        n=1: min(2L, L) * L / (2L * sqrt(3) L) = 1 / (2 sqrt(3));
        same length: penalty 1
      score 1 = 10 * mean over n (= sum / 4) of the mean over refs (/ 2)
    Image 2: candidate "a cat", ref "a cat sleeps".
      cand  n=1 {a: 0, cat: L}, n=2 {a cat: L}
      ref   n=1 {a: 0, cat: L, sleeps: L}, n=2 {a cat: L, cat sleeps: L}
        n=1 and n=2: L^2 / (L * sqrt(2) L) = 1 / sqrt(2); n=3, n=4: 0
        penalty: 2 words vs 3 -> exp(-1 / 72)
      score 2 = 10 * (2 / sqrt(2)) * exp(-1/72) / 4
    (Plain CIDEr, without clipping and the penalty, would give n=1
    similarity 1 instead of 1/2 for ref1 of image 1.)
    """
    s1 = (
        10
        * (
            (1 / 2 + 1 / math.sqrt(5)) * math.exp(-4 / 72)
            + 1 / (2 * math.sqrt(3))
        )
        / 4
        / 2
    )
    s2 = 10 * (2 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert s1 == pytest.approx(1.480876, abs=1e-6)
    assert s2 == pytest.approx(3.486769, abs=1e-6)
    out = _score(
        [
            dict(
                pred_caption='A dog, a dog!',
                gt_caption=['a dog', 'a big dog runs'],
            ),
            dict(pred_caption='a cat', gt_caption='a cat sleeps'),
        ]
    )
    assert out['caption/CIDEr-D'] == pytest.approx((s1 + s2) / 2, rel=1e-9)


def test_perfect_and_empty_predictions():
    refs = [['a red car on a road', 'a car'], ['two dogs play in the snow']]
    perfect = _score(
        [dict(pred_caption=r[0], gt_caption=r) for r in refs],
    )
    for key in KEYS[:4]:
        assert perfect[f'caption/{key}'] == pytest.approx(1.0, rel=1e-6)
    empty = _score([dict(pred_caption='...', gt_caption=r) for r in refs])
    for key in KEYS:
        assert empty[f'caption/{key}'] == pytest.approx(0.0, abs=1e-6)
    # no reference word at all: CIDEr-D is 0, not a pycocoevalcap error
    out = _score([dict(pred_caption='a cat', gt_caption=['.'])])
    assert out['caption/CIDEr-D'] == 0.0


def test_evaluator_data_elements_and_prefix():
    metric = dict(type='CaptionMetric', prefix='cap')
    evaluator = Evaluator([METRICS.build(metric)])
    batches = [
        [
            BaseDataElement(
                pred_caption='a cat sat on the mat',
                gt_caption=['a cat sat on a mat', 'the cat is on the mat'],
            )
        ],
        [dict(pred_caption='a dog', gt_caption='a dog runs')],
    ]
    for batch in batches:
        evaluator.process(batch)
    out = evaluator.evaluate(2)
    assert sorted(out) == sorted(f'cap/{k}' for k in KEYS)
    # a metric called directly with data elements (no to_dict) works too
    direct = METRICS.build(dict(type='CaptionMetric'))
    direct.process(None, batches[0])
    assert direct.results == [
        dict(
            pred='a cat sat on the mat',
            refs=['a cat sat on a mat', 'the cat is on the mat'],
        )
    ]


def test_mmpretrain_data_sample():
    structures = pytest.importorskip('mmpretrain.structures')
    sample = structures.DataSample()
    sample.set_field('a cat', 'pred_caption', field_type='data')
    sample.set_field(['a cat', 'one cat'], 'gt_caption', field_type='data')
    sample.set_field(5, 'image_id', field_type='metainfo')
    metric = METRICS.build(dict(type='CaptionMetric'))
    metric.process(None, [sample])
    assert metric.results == [dict(pred='a cat', refs=['a cat', 'one cat'])]


def test_ann_file_toy_set(toy_root):
    ann_file = osp.join(toy_root, 'annotations', 'captions_val.json')
    with open(ann_file) as f:
        anns = json.load(f)['annotations']
    refs = {}
    for ann in anns:
        refs.setdefault(ann['image_id'], []).append(ann['caption'])
    ids = sorted(refs)
    assert len(ids) == 8 and all(len(r) == 3 for r in refs.values())
    preds = {i: refs[i][-1] for i in ids}  # one of the references

    metric = METRICS.build(dict(type='CaptionMetric', ann_file=ann_file))
    # ids as img_id (mmdet), image_id (mmpretrain), digit strings
    samples = [
        dict(pred_caption=preds[i], **{key: i})
        for i, key in zip(ids, ['img_id', 'image_id'] * 4)
    ]
    samples[0]['img_id'] = str(samples[0]['img_id'])
    # a repeated image (e.g. rank padding) is scored once: the first one
    samples.append(dict(pred_caption='nothing alike', img_id=ids[0]))
    evaluator = Evaluator(metric)
    evaluator.process(samples[:5])
    evaluator.process(samples[5:])
    out = evaluator.evaluate(len(samples))
    for n in (1, 2, 3, 4):
        assert out[f'caption/BLEU-{n}'] == pytest.approx(1.0, rel=1e-6)
    # same scores as giving the references on the samples
    inline = _score(
        [dict(pred_caption=preds[i], gt_caption=refs[i]) for i in ids]
    )
    assert inline == pytest.approx(out, rel=1e-12)
    assert 0 < out['caption/CIDEr-D'] < 10


def test_errors(tmp_path, toy_root):
    build = METRICS.build
    metric = build(dict(type='CaptionMetric'))
    with pytest.raises(ValueError, match='"pred_caption"'):
        metric.process(None, [dict(gt_caption='a cat')])
    with pytest.raises(ValueError, match='"pred_caption" string, got list'):
        metric.process(None, [dict(pred_caption=['a'], gt_caption='a')])
    with pytest.raises(ValueError, match='"gt_caption"'):
        metric.process(None, [dict(pred_caption='a cat')])
    with pytest.raises(ValueError, match='"gt_caption"'):
        metric.process(None, [dict(pred_caption='a cat', gt_caption=[])])
    with pytest.raises(TypeError, match='dicts or BaseDataElements'):
        metric.process(None, ['a cat'])
    with pytest.raises(ValueError, match='no data samples'):
        metric.compute_metrics([])

    missing = str(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError, match='nope.json'):
        build(dict(type='CaptionMetric', ann_file=missing))
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(images=[])))
    with pytest.raises(ValueError, match='not a COCO captions file'):
        build(dict(type='CaptionMetric', ann_file=str(bad)))
    bad.write_text(json.dumps(dict(annotations=[dict(image_id=1)])))
    with pytest.raises(ValueError, match='lacks "image_id" or "caption"'):
        build(dict(type='CaptionMetric', ann_file=str(bad)))

    ann_file = osp.join(toy_root, 'annotations', 'captions_val.json')
    metric = build(dict(type='CaptionMetric', ann_file=ann_file))
    with pytest.raises(ValueError, match='image id 999 has no caption in'):
        metric.process(None, [dict(pred_caption='a cat', img_id=999)])
    with pytest.raises(ValueError, match='"img_id" or "image_id"'):
        metric.process(None, [dict(pred_caption='a cat', gt_caption='x')])
