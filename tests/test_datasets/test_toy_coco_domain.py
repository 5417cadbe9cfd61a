# Copyright (c) mmvfm contributors. All rights reserved.
"""Tests of the out-of-domain toy COCO set (``domain='ood'``)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import os.path as osp
import re
from typing import Dict, List

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmvfm.datasets.toy_coco import (
    OOD_BACKGROUNDS,
    OOD_STYLES,
    TOY_CLASSES,
    TOY_COLORS,
    TOY_DOMAINS,
    TOY_OOD_COLORS,
    generate_toy_coco,
    verify_toy_coco,
)
from mmvfm.datasets.toy_coco.painting import _shade

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL = dict(num_train=16, num_val=4, img_size=(48, 64), num_captions=5)
SPLITS = ('train', 'val')
KINDS = ('instances', 'captions', 'classification', 'multilabel')


def _hashes(root: str) -> Dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return out


def _load(root: str, name: str) -> dict:
    with open(osp.join(root, 'annotations', name)) as f:
        return json.load(f)


def _image(root: str, file_name: str) -> np.ndarray:
    im = cv2.imread(osp.join(root, file_name))
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB).astype(int)


def _words(text: str) -> List[str]:
    return re.findall(r'[a-z]+', text)


@pytest.fixture(scope='module')
def sets(tmp_path_factory) -> Dict[str, str]:
    base = tmp_path_factory.mktemp('domains')
    roots = {}
    for domain in TOY_DOMAINS:
        roots[domain] = str(base / domain)
        generate_toy_coco(roots[domain], seed=0, domain=domain, **SMALL)
    return roots


def test_constants():
    assert TOY_DOMAINS == ('in', 'ood')
    assert not set(TOY_OOD_COLORS) & set(TOY_COLORS)
    assert len(TOY_OOD_COLORS) == len(TOY_COLORS)
    assert len(set(TOY_OOD_COLORS.values())) == len(TOY_OOD_COLORS)
    for ood in TOY_OOD_COLORS.values():
        # far from every in-domain colour, even after the +-6 jitter
        for rgb in TOY_COLORS.values():
            assert np.abs(np.subtract(ood, rgb)).max() >= 70
        # dark on some channel: off the light ood backgrounds (>= 120)
        assert min(ood) <= 90
        assert min(_shade(np.clip(np.add(ood, 6), 0, 255))) <= 96
    # single words, so a caption names a colour by one word
    for name in (*TOY_COLORS, *TOY_OOD_COLORS):
        assert re.fullmatch('[a-z]+', name), name


def test_same_classes_and_formats(sets):
    inn, ood = sets['in'], sets['ood']
    for split in SPLITS:
        for kind in KINDS:
            a = _load(inn, f'{kind}_{split}.json')
            b = _load(ood, f'{kind}_{split}.json')
            assert a.keys() == b.keys(), kind
        a = _load(inn, f'instances_{split}.json')
        b = _load(ood, f'instances_{split}.json')
        assert a['categories'] == b['categories']
        assert [c['name'] for c in b['categories']] == list(TOY_CLASSES)
        assert b['info']['domain'] == 'ood' and 'domain' not in a['info']
        assert {k for k in a['info'] if k != 'description'} | {'domain'} == {
            k for k in b['info'] if k != 'description'
        }
        # the same keys, plus the ood extras
        assert {*a['images'][0], 'background'} == set(b['images'][0])
        assert {*a['annotations'][0], 'style'} == set(b['annotations'][0])
        for kind in ('classification', 'multilabel'):
            a = _load(inn, f'{kind}_{split}.json')
            b = _load(ood, f'{kind}_{split}.json')
            assert a['metainfo'] == b['metainfo']
            assert a['metainfo']['classes'] == list(TOY_CLASSES)
            assert set(a['data_list'][0]) == set(b['data_list'][0])
    with open(osp.join(ood, 'classes.txt')) as f:
        assert f.read().split() == list(TOY_CLASSES)
    assert sorted(_hashes(inn)) == sorted(_hashes(ood))
    summary = verify_toy_coco(ood)
    assert summary['train']['images'] == 16
    assert summary['train']['captions'] == 80


def test_ood_attributes(sets):
    colors, styles, backgrounds = set(), set(), set()
    for split in SPLITS:
        inst = _load(sets['ood'], f'instances_{split}.json')
        for ann in inst['annotations']:
            assert ann['color'] in TOY_OOD_COLORS
            assert ann['style'] in OOD_STYLES
            colors.add(ann['color'])
            styles.add(ann['style'])
        for img in inst['images']:
            assert img['background'] in OOD_BACKGROUNDS
            backgrounds.add(img['background'])
        inst = _load(sets['in'], f'instances_{split}.json')
        assert all(a['color'] in TOY_COLORS for a in inst['annotations'])
    assert styles == set(OOD_STYLES)
    assert backgrounds == set(OOD_BACKGROUNDS)
    assert len(colors) >= 6


def test_ood_masks_match_pixels(sets):
    root = sets['ood']
    for split in SPLITS:
        coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            im = _image(root, info['file_name'])
            union = np.zeros(im.shape[:2], int)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                mask = coco.annToMask(ann).astype(bool)
                union += mask
                assert mask.sum() == ann['area'] > 0
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann['bbox']
                assert [x, y, x + w, y + h] == [
                    xs.min(),
                    ys.min(),
                    xs.max() + 1,
                    ys.max() + 1,
                ]
                # two tones: the jittered colour and its shade
                tones = np.unique(im[mask], axis=0)
                ref = np.array(TOY_OOD_COLORS[ann['color']])
                base = [t for t in tones if np.abs(t - ref).max() <= 6]
                assert len(base) == 1, (ann['color'], tones)
                allowed = {tuple(base[0]), tuple(_shade(base[0]))}
                assert {tuple(t) for t in tones} <= allowed
                ring = (
                    cv2.dilate(
                        mask.astype(np.uint8), np.ones((3, 3), np.uint8)
                    ).astype(bool)
                    & ~mask
                )
                assert (np.abs(im[ring] - base[0]).max(axis=1) > 10).all()
            assert union.max() == 1, 'masks overlap'
            # objects have a channel <= 96, the background none: the
            # painted pixels are exactly the union of the masks
            assert ((im.min(axis=2) <= 96) == (union == 1)).all()
            assert (im[union == 0] >= 120).all()


def _background_stats(root: str) -> Dict[str, float]:
    """Mean and share of pixels equal to their right neighbour."""
    means, equal, count = [], 0, 0
    for split in SPLITS:
        coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            im = _image(root, info['file_name'])
            fg = np.zeros(im.shape[:2], bool)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                fg |= coco.annToMask(ann).astype(bool)
            means.append(im[~fg].mean())
            both = ~fg[:, 1:] & ~fg[:, :-1]
            same = (im[:, 1:] == im[:, :-1]).all(axis=2)
            equal += int((same & both).sum())
            count += int(both.sum())
            if info.get('background') in ('stripes', 'checker'):
                assert len(np.unique(im[~fg], axis=0)) == 2
    return dict(mean=float(np.mean(means)), equal=equal / count)


def test_background_statistics(sets):
    inn = _background_stats(sets['in'])
    ood = _background_stats(sets['ood'])
    # dark grainy texture vs light noise-free patterns
    assert inn['mean'] < 120 < ood['mean']
    assert ood['mean'] - inn['mean'] > 50
    assert inn['equal'] < 0.1
    assert ood['equal'] > 0.5


def test_ood_captions(sets):
    in_words, ood_words = set(TOY_COLORS), set(TOY_OOD_COLORS)
    for domain, own, other in (
        ('ood', ood_words, in_words),
        ('in', in_words, ood_words),
    ):
        root = sets[domain]
        for split in SPLITS:
            inst = _load(root, f'instances_{split}.json')
            caps = _load(root, f'captions_{split}.json')
            assert caps['images'] == inst['images']
            colors: Dict[int, set] = {}
            for ann in inst['annotations']:
                colors.setdefault(ann['image_id'], set()).add(ann['color'])
            for cap in caps['annotations']:
                words = set(_words(cap['caption']))
                assert not words & other, cap['caption']
                # every object's colour is named, and no other colour
                assert words & own == colors[cap['image_id']]
                if domain == 'ood':
                    assert 'textured' not in words
    # the background words name the ood family
    inst = _load(sets['ood'], 'instances_train.json')
    caps = _load(sets['ood'], 'captions_train.json')
    family = {i['id']: i['background'] for i in inst['images']}
    adjective = dict(
        stripes='striped', checker='checkered', gradient='gradient'
    )
    seen = 0
    for cap in caps['annotations']:
        text = cap['caption']
        if 'background' in text or 'scene' in text:
            assert adjective[family[cap['image_id']]] in text, text
            seen += 1
    assert seen > 0


def test_deterministic_and_independent(tmp_path, sets):
    again = str(tmp_path / 'again')
    generate_toy_coco(again, seed=0, domain='ood', **SMALL)
    a, b = _hashes(sets['ood']), _hashes(again)
    assert a == b
    # independent random streams: not a recoloured in-domain set
    inn = _load(sets['in'], 'instances_train.json')
    ood = _load(sets['ood'], 'instances_train.json')
    assert [i['width'] for i in inn['images']] != [
        i['width'] for i in ood['images']
    ]
    other = str(tmp_path / 'seed1')
    generate_toy_coco(other, seed=1, domain='ood', **SMALL)
    assert _hashes(other)['train/000001.png'] != a['train/000001.png']


def test_verify_checks_the_domain(tmp_path):
    for domain, wrong in (('ood', 'red'), ('in', 'pink')):
        root = str(tmp_path / domain)
        generate_toy_coco(
            root, num_train=2, num_val=1, img_size=40, domain=domain
        )
        path = osp.join(root, 'annotations', 'instances_train.json')
        with open(path) as f:
            data = json.load(f)
        data['annotations'][0]['color'] = wrong
        with open(path, 'w') as f:
            json.dump(data, f)
        with pytest.raises(ValueError, match='annotations.color.*' + wrong):
            verify_toy_coco(root)
    root = str(tmp_path / 'style')
    generate_toy_coco(root, num_train=2, num_val=1, img_size=40, domain='ood')
    path = osp.join(root, 'annotations', 'instances_val.json')
    with open(path) as f:
        data = json.load(f)
    del data['annotations'][0]['style']
    with open(path, 'w') as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match='instances_val.json.*style'):
        verify_toy_coco(root)


@pytest.mark.parametrize('domain', ['out', 'OOD', '', None, 1])
def test_bad_domain(tmp_path, domain):
    with pytest.raises(ValueError, match='domain') as err:
        generate_toy_coco(str(tmp_path / 'bad'), domain=domain)
    assert repr(domain) in str(err.value)
    assert "('in', 'ood')" in str(err.value)
    assert not osp.exists(tmp_path / 'bad')


def test_cli_domain(tmp_path, capsys):
    path = osp.join(
        REPO_ROOT, 'tools', 'dataset_converters', 'generate_toy_coco.py'
    )
    spec = importlib.util.spec_from_file_location('generate_toy_coco', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'cli')
    args = [out, '--num-train', '2', '--num-val', '1', '--img-size', '40']
    assert tool.main([*args, '--domain', 'ood', '--no-progress']) == 0
    assert 'out-of-domain toy COCO written' in capsys.readouterr().out
    inst = _load(out, 'instances_train.json')
    assert inst['info']['domain'] == 'ood'
    assert all(a['color'] in TOY_OOD_COLORS for a in inst['annotations'])
    assert tool.parse_args(args).domain == 'in'
    with pytest.raises(SystemExit):
        tool.parse_args([*args, '--domain', 'outside'])
    assert "invalid choice: 'outside'" in capsys.readouterr().err
