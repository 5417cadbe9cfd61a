# Copyright (c) mmvfm contributors. All rights reserved.
"""LoRA checkpoints: release round trip and mismatch errors naming the
key, merged export into the plain backbone, ViSFT's layout proven against
loralib's MergedLinear itself."""

import copy

import pytest
import torch
from conftest import TINY_VIT
from mmdet.registry import MODELS

from mmvfm.models.peft import (
    MMPRETRAIN_TO_VISFT,
    VISFT_TO_MMPRETRAIN,
    apply_lora,
    load_lora,
    lora_layers,
    lora_state,
    merged_state_dict,
    rename_keys,
    save_lora,
)

pytestmark = pytest.mark.usefixtures('one_thread')
QV = [True, False, True]
QKV = r'layers\.\d+\.attn\.qkv'


def _vit(lora=True, seed=0, **lora_kwargs):
    torch.manual_seed(seed)
    model = MODELS.build(copy.deepcopy(TINY_VIT))
    model.init_weights()
    model.eval()
    if lora:
        kwargs = dict(rank=4, alpha=2.0, parts=QV)
        kwargs.update(lora_kwargs)
        apply_lora(model, [dict(pattern=QKV)], **kwargs)
        with torch.no_grad():
            for _, layer in lora_layers(model):
                layer.lora_B.normal_()
                layer.lora_A.normal_()
    return model


def test_release_round_trip(tmp_path):
    tuned = _vit(seed=0)
    fresh = _vit(seed=1)  # other weights and adapters; then tuned's base
    fresh.load_state_dict(
        {k: v for k, v in tuned.state_dict().items() if 'lora_' not in k},
        strict=False,
    )
    path = str(tmp_path / 'lora.pth')
    save_lora(tuned, path)
    release = torch.load(path, weights_only=True)
    assert set(release['state_dict']) == {
        f'layers.{i}.attn.qkv.lora_{m}' for i in (0, 1) for m in 'AB'
    }
    assert release['meta']['layers']['layers.0.attn.qkv'] == dict(
        rank=4, alpha=2.0, parts=QV, in_features=32, out_features=96
    )
    assert load_lora(fresh, path) == ['layers.0.attn.qkv', 'layers.1.attn.qkv']
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh(x)[0], tuned(x)[0])


@pytest.mark.parametrize(
    'other,match',
    [
        (dict(rank=8), r'layers.0.attn.qkv.lora_A: the release has rank=4'),
        (dict(alpha=1.0), 'the release has alpha=2.0, the model alpha=1.0'),
        (
            dict(parts=[True, True, True]),
            r'has parts=\[True, False, True\], the model parts',
        ),
    ],
)
def test_release_mismatch_names_the_key(other, match):
    release = lora_state(_vit())
    with pytest.raises(ValueError, match=match):
        load_lora(_vit(**other), release)


def test_release_depth_mismatch_and_strict():
    release = lora_state(_vit())
    deeper = copy.deepcopy(TINY_VIT)
    deeper['arch']['num_layers'] = 1
    model = MODELS.build(deeper)
    apply_lora(model, [dict(pattern=QKV)], rank=4, alpha=2.0, parts=QV)
    with pytest.raises(KeyError, match='layers.1.attn.qkv.lora_A: the model'):
        load_lora(model, release)
    partial = dict(
        release,
        state_dict={
            k: v for k, v in release['state_dict'].items() if 'layers.0' in k
        },
    )
    with pytest.raises(KeyError, match=r'layers.1.attn.qkv.lora_A: the'):
        load_lora(_vit(), partial)
    assert load_lora(_vit(), partial, strict=False) == ['layers.0.attn.qkv']
    with pytest.raises(ValueError, match='not an mmvfm LoRA release'):
        load_lora(_vit(), dict(release, meta=dict(format='other')))


def test_merged_export_is_a_plain_backbone_checkpoint():
    tuned = _vit()
    state = merged_state_dict(tuned)
    assert not any('lora' in k for k in state)
    assert not any(m.merged for _, m in lora_layers(tuned))  # untouched
    plain = _vit(lora=False, seed=5)
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain(x)[0], tuned(x)[0], atol=1e-5, rtol=1e-5)


def test_visft_layout_against_loralib():
    """Our adapters exported in ViSFT's layout load into loralib's own
    MergedLinear (what ViSFT trains) and give the same outputs; ViSFT's
    keys map back onto our model."""
    import loralib  # a test-only dependency (requirements/tests.txt)

    tuned = _vit()
    release = lora_state(tuned)['state_dict']
    visft = rename_keys(release, MMPRETRAIN_TO_VISFT)
    assert set(visft) == {
        f'visual.blocks.{i}.attn.qkv.lora_{m}' for i in (0, 1) for m in 'AB'
    }
    x = torch.randn(5, 7, 32)
    for i in (0, 1):
        ours = tuned.layers[i].attn.qkv
        theirs = loralib.MergedLinear(
            32, 96, r=4, lora_alpha=2.0, enable_lora=QV, merge_weights=False
        )
        state = {
            'weight': ours.weight.detach(),
            'bias': ours.bias.detach(),
            'lora_A': visft[f'visual.blocks.{i}.attn.qkv.lora_A'],
            'lora_B': visft[f'visual.blocks.{i}.attn.qkv.lora_B'],
        }
        theirs.load_state_dict(state, strict=True)
        theirs.eval()
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
    # ViSFT's file -> our model (shapes checked, no meta)
    fresh = _vit(seed=3)
    assert load_lora(fresh, rename_keys(visft, VISFT_TO_MMPRETRAIN)) == [
        'layers.0.attn.qkv',
        'layers.1.attn.qkv',
    ]
    for i in (0, 1):
        torch.testing.assert_close(
            fresh.layers[i].attn.qkv.lora_B, tuned.layers[i].attn.qkv.lora_B
        )
    wrong_rank = _vit(rank=8)
    with pytest.raises(ValueError, match=r'layers.0.attn.qkv.lora_A: shape'):
        load_lora(wrong_rank, rename_keys(visft, VISFT_TO_MMPRETRAIN))
    with pytest.raises(ValueError, match='matches no renaming rule'):
        rename_keys(
            {'visual.head.weight': torch.zeros(1)}, VISFT_TO_MMPRETRAIN
        )
