# Copyright (c) mmvfm contributors. All rights reserved.
"""Every shipped config trains one real iteration (and the toy configs
pass tools/test.py), through tools/misc/smoke_run.py.

Select these alone with ``python -m pytest -m smoke``. Every config runs
at its own pipelines and input size (1333x800 and the like for the COCO
configs: ~6 min for the 13 of them on 2 cores). ``MMVFM_SMOKE_SCALE=0.5``
runs the non-toy configs at half their spatial sizes (still every FPN level
and every pipeline step) should their full-scale steps outgrow CI's time.
See README.md, "Contributing".
"""

import os
import os.path as osp
import re
import socket

import pytest
import torch
from conftest import ALL_CONFIGS, REPO_ROOT, load_tool
from mmengine.config import Config

from mmvfm.testing import bad_losses

pytestmark = pytest.mark.smoke

# factor on the non-toy configs' spatial sizes (1: their own)
COCO_SCALE = float(os.environ.get('MMVFM_SMOKE_SCALE', '1'))
# Configs whose one CPU step at their own scale outgrows the suite: EVA-CLIP
# ViT-G (1.0 B parameters, 40 blocks of 1408 channels; ViSFT's stage 1 at
# batch 32 x 224 px ran past the 300 s test timeout in one step, its
# detection / segmentation inputs of 672 / 1024 px are 2.3k / 5.3k tokens).
# On CPU they step at this spatial factor and one image per task batch --
# the whole model, every pipeline step, pyramid level and loss; at their
# own scale where a GPU is present (test_heavy_config_at_own_scale).
#
# Uni-Perceiver v2's COCO configs: each captioning step encodes the whole
# vocabulary as candidates (30k words through 12 text + 6 decoder layers,
# ~18 TFLOP forward: minutes on one CPU thread) and the ImageNet task its
# 1000 class names. On CPU they step at 1/4 of their input sizes, two images
# per task batch (retrieval needs a second pair) and a 2048-word vocabulary
# (every other module at its own size); at their own scale where a GPU is
# present.
HEAVY = {
    'eva-g-p14': dict(scale=0.25),
    'maskdino_8x-multitask': dict(
        scale=0.25,
        timeout=1200,  # 4 task steps of a 1000-name / 2048-word softmax
        batch_size=2,  # retrieval needs another pair in the batch
        cfg_options={
            'model.text_encoder.vocab_size': 2048,
            'model.tokenizer.vocab_size': 2048,
            # the softmax over every candidate still; fewer with gradient
            'model.tasks.classification.grad_candidates': 32,
            'model.tasks.captioning.grad_candidates': 64,
        },
    ),
}
# A detector's own losses at initialisation (YOLOX's objectness: ~40).
STUDENT_BOUND = 100.0
# Distillation terms from an *untrained* (but initialised) teacher: in eval
# mode its BatchNorm layers keep their initial statistics and do not
# normalise, and caffe-style inputs (std 1) are in 0-255 units, so its
# features are larger than a trained teacher's and FGD's spatial attention
# (softmax of mean|F| / T) peaks: measured up to ~3e3 (FCOS, P3). These
# terms say nothing of a trained teacher's; the bound catches blow-ups
# (YOLOX-l with PyTorch-default weights gave a total of 7.6e16).
DISTILL_BOUND = 1e5


def _alias_target(path: str):
    """The config an alias file (``_base_ = './x.py'`` and comments only)
    stands for, else None."""
    with open(path) as f:
        lines = [
            ln for ln in f.read().splitlines() if ln.strip() and ln[0] != '#'
        ]
    m = re.fullmatch(r"_base_ = '\./([^']+\.py)'(\s+# noqa: E501)?", lines[0])
    if len(lines) == 1 and m:
        return osp.join(osp.dirname(path), m.group(1))
    return None


ALIASES = {p: _alias_target(p) for p in ALL_CONFIGS if _alias_target(p)}
STEPPED = [p for p in ALL_CONFIGS if p not in ALIASES]


def _is_toy(path: str) -> bool:
    return 'toy' in osp.basename(path) or 'projects/' in path


def _heavy(path: str):
    """The CPU smoke settings of a heavy config, else None."""
    return next((h for k, h in HEAVY.items() if k in osp.basename(path)), None)


def _ids(paths):
    return [osp.relpath(p, REPO_ROOT) for p in paths]


@pytest.fixture(scope='module')
def smoke_tool():
    return load_tool('misc/smoke_run.py')


@pytest.fixture(scope='module')
def smoke_data(tmp_path_factory, smoke_tool):
    from mmvfm.testing import make_smoke_data

    return make_smoke_data(str(tmp_path_factory.mktemp('smoke_data')))


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt (a weight download) fails the test."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f'smoke run tried to connect to {address}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)


@pytest.mark.parametrize('alias', list(ALIASES), ids=_ids(ALIASES))
def test_alias_is_its_target(alias):
    """A short alias (``configs/fgd/retinanet_r50.py``) merges to exactly
    its target, so stepping the target steps the alias."""
    assert (
        Config.fromfile(alias)._cfg_dict
        == Config.fromfile(ALIASES[alias])._cfg_dict
    )


def test_every_config_is_stepped():
    assert set(STEPPED) | set(ALIASES) == set(ALL_CONFIGS)
    assert any(not _is_toy(p) for p in STEPPED)
    assert any(_is_toy(p) for p in STEPPED)
    assert HEAVY_CONFIGS and all('coco' in p for p in HEAVY_CONFIGS)


def _stepped_params():
    """Every stepped config; a heavy one may take its ``timeout`` (s)."""
    return [
        pytest.param(
            p,
            id=osp.relpath(p, REPO_ROOT),
            marks=[pytest.mark.timeout(_heavy(p)['timeout'])]
            if (_heavy(p) or {}).get('timeout')
            else [],
        )
        for p in STEPPED
    ]


@pytest.mark.parametrize('path', _stepped_params())
def test_config_trains_one_iteration(
    path, smoke_tool, smoke_data, tmp_path, monkeypatch, no_network
):
    monkeypatch.syspath_prepend(REPO_ROOT)  # projects.* custom imports
    monkeypatch.chdir(REPO_ROOT)
    toy = _is_toy(path)
    heavy = _heavy(path) or {}
    result = smoke_tool.smoke_one(
        path,
        smoke_data,
        str(tmp_path / 'run'),
        scale=1.0 if toy else heavy.get('scale', COCO_SCALE),
        batch_size=heavy.get('batch_size', 1) if heavy else None,
        test=toy,
        cfg_options=heavy.get('cfg_options'),
    )
    _check_result(path, result, toy)


HEAVY_CONFIGS = [p for p in STEPPED if _heavy(p)]


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a GPU (ViT-G, Uni-Perceiver v2 COCO at full size)',
)
@pytest.mark.parametrize('path', HEAVY_CONFIGS, ids=_ids(HEAVY_CONFIGS))
def test_heavy_config_at_own_scale(
    path, smoke_tool, smoke_data, tmp_path, monkeypatch, no_network
):
    monkeypatch.chdir(REPO_ROOT)
    result = smoke_tool.smoke_one(path, smoke_data, str(tmp_path / 'run'))
    _check_result(path, result, toy=False)


def _check_result(path: str, result: dict, toy: bool) -> None:
    losses = result['losses']
    assert losses['iters'] == result['expected_iters']
    assert 'loss' in losses
    # a distiller logs each loss by name and its terms as '<tag>.<term>'
    names = Config.fromfile(path).model.get('distill_losses', {})
    tags = tuple(n.replace('loss_', '', 1) + '.' for n in names)
    distill = {
        k: v for k, v in losses.items() if k in names or k.startswith(tags)
    }
    student = {k: v for k, v in losses.items() if k not in distill}
    student.pop('loss')  # the sum, with the distillation terms
    assert not bad_losses(student, STUDENT_BOUND), losses
    assert not bad_losses(distill, DISTILL_BOUND), losses
    if toy:
        metrics = result['metrics']
        assert metrics, 'tools/test.py returned no metrics'
        assert all(isinstance(v, (int, float)) for v in metrics.values()), (
            metrics
        )
