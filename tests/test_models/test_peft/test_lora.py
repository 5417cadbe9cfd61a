# Copyright (c) mmvfm contributors. All rights reserved.
"""LoRA: the layer against its equations (float64), partial adapters on a
fused qkv, merge / unmerge, enable / disable, apply by regex on mmpretrain
backbones (supported ones change their output, others are refused), the
config builder, and LoRA dropout under a frozen backbone."""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import TINY_VIT
from mmdet.registry import MODELS

from mmvfm.models.peft import (
    LoRALinear,
    apply_lora,
    lora_layers,
    merge_lora,
    set_lora_enabled,
    unmerge_lora,
)

pytestmark = pytest.mark.usefixtures('one_thread')
F64 = torch.float64
QV = [True, False, True]
QKV = r'layers\.\d+\.attn\.qkv'


def _layer(parts=None, rank=3, alpha=6.0, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    layer = LoRALinear(
        5, 12, rank=rank, alpha=alpha, dropout=dropout, parts=parts
    ).to(F64)
    with torch.no_grad():
        layer.lora_B.normal_()  # a non-zero adapter
    return layer


def test_plain_lora_equation():
    layer = _layer()
    x = torch.randn(4, 7, 5, dtype=F64)
    W, b, A, B = layer.weight, layer.bias, layer.lora_A, layer.lora_B
    expected = x @ W.T + b + (alpha := 6.0) / 3 * (x @ A.T @ B.T)
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.delta_weight(), alpha / 3 * B @ A)


def test_partial_lora_on_fused_qkv():
    """q and v adapted, k untouched: each enabled part has its own A_j, B_j
    (loralib's stacked shapes)."""
    layer = _layer(parts=QV)
    assert layer.lora_A.shape == (2 * 3, 5)
    assert layer.lora_B.shape == (2 * 4, 3)
    x = torch.randn(9, 5, dtype=F64)
    A_q, A_v = layer.lora_A[:3], layer.lora_A[3:]
    B_q, B_v = layer.lora_B[:4], layer.lora_B[4:]
    s = 6.0 / 3
    base = x @ layer.weight.T + layer.bias
    expected = base.clone()
    expected[:, 0:4] += s * x @ A_q.T @ B_q.T
    expected[:, 8:12] += s * x @ A_v.T @ B_v.T
    out = layer(x)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)
    # k: bit for bit the base layer's
    plain = nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.equal(out[:, 4:8], plain[:, 4:8])
    delta = layer.delta_weight()
    assert delta[4:8].abs().max() == 0
    torch.testing.assert_close(delta[:4], s * B_q @ A_q)


@pytest.mark.parametrize('parts', [None, QV])
def test_merge_unmerge(parts):
    layer = _layer(parts=parts).float().eval()
    weight = layer.weight.detach().clone()
    x = torch.randn(6, 5)
    out = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), out, atol=1e-5, rtol=1e-5)
    # merged: a plain linear layer
    torch.testing.assert_close(
        nn.functional.linear(x, layer.weight, layer.bias), out
    )
    with pytest.raises(RuntimeError, match='already merged'):
        layer.merge()
    with pytest.raises(RuntimeError, match='unmerge'):
        layer.set_enabled(False)
    with pytest.raises(RuntimeError, match='training a merged layer'):
        layer.train()(x)
    with torch.no_grad():
        layer(x)  # no gradient: fine even in train mode
    layer.unmerge()
    torch.testing.assert_close(layer.weight, weight, atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match='not merged'):
        layer.unmerge()


def test_enable_disable_and_zero_init():
    layer = _layer()
    x = torch.randn(3, 5, dtype=F64)
    base = x @ layer.weight.T + layer.bias
    layer.set_enabled(False)
    torch.testing.assert_close(layer(x), base)
    layer.set_enabled(True)
    assert not torch.allclose(layer(x), base)
    layer.reset_lora_parameters()  # B = 0: the adapter changes nothing
    torch.testing.assert_close(layer(x), base)


def test_dropout_only_in_training():
    layer = _layer(dropout=0.5)
    x = torch.randn(64, 5, dtype=F64)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


@pytest.mark.parametrize(
    'kwargs,match',
    [
        (dict(rank=0), 'rank must be an int >= 1'),
        (dict(parts=[False, False, False]), 'no part enabled'),
        (dict(parts=[True] * 5), 'does not split into 5 parts'),
        (dict(dropout=1.0), r'dropout must be in \[0, 1\)'),
    ],
)
def test_bad_layer_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(5, 12, **kwargs)


def _vit():
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(TINY_VIT))
    model.init_weights()
    model.eval()  # (mmpretrain's ViT.train returns None)
    return model


def _randomise_lora(model):
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_()


def test_vit_qkv_qv_only_changes_output_and_keeps_keys():
    plain = _vit()
    model = _vit()
    adapted = apply_lora(model, [dict(pattern=QKV, parts=QV)], rank=4)
    assert adapted == ['layers.0.attn.qkv', 'layers.1.attn.qkv']
    x = torch.randn(2, 3, 32, 32)
    # B = 0: the same network
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    _randomise_lora(model)
    assert not torch.allclose(model(x)[0], plain(x)[0], atol=1e-4)
    # checkpoint keys of the plain backbone are kept; only lora_* are new
    keys, plain_keys = set(model.state_dict()), set(plain.state_dict())
    assert plain_keys <= keys
    assert {k for k in keys - plain_keys} == {
        f'layers.{i}.attn.qkv.lora_{m}' for i in (0, 1) for m in 'AB'
    }
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == keys - plain_keys
    # merged: the same output, no adapter left in the computation
    out = model(x)[0]
    assert merge_lora(model) == 2
    torch.testing.assert_close(model(x)[0], out, atol=1e-5, rtol=1e-5)
    assert unmerge_lora(model) == 2
    # adapter off: the plain backbone again
    set_lora_enabled(model, False)
    torch.testing.assert_close(model(x)[0], plain(x)[0])
    # merged and unloaded: no LoRA module or parameter is left
    set_lora_enabled(model, True)
    out = model(x)[0]
    assert merge_lora(model, unload=True) == 2
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == plain_keys
    assert type(model.layers[0].attn.qkv) is nn.Linear
    torch.testing.assert_close(model(x)[0], out, atol=1e-5, rtol=1e-5)


def test_swin_v1_window_attention_supported():
    torch.manual_seed(0)
    swin = MODELS.build(
        dict(
            type='mmpretrain.SwinTransformer',
            arch=dict(embed_dims=16, depths=[1, 1], num_heads=[1, 2]),
            img_size=32,
            window_size=4,
            out_indices=(1,),
        )
    )
    swin.eval()
    x = torch.randn(1, 3, 32, 32)
    before = swin(x)[0]
    adapted = apply_lora(swin, [dict(pattern=r'.*attn\.w_msa\.qkv')])
    assert len(adapted) == 2
    _randomise_lora(swin)
    assert not torch.allclose(swin(x)[0], before, atol=1e-4)


@pytest.mark.parametrize(
    'backbone,pattern,parent',
    [
        (
            dict(
                type='mmpretrain.BEiTViT',
                arch=dict(
                    embed_dims=32,
                    num_layers=1,
                    num_heads=2,
                    feedforward_channels=64,
                ),
                img_size=32,
                patch_size=8,
            ),
            QKV,
            'BEiTAttention',
        ),
        (
            dict(
                type='mmpretrain.SwinTransformerV2',
                arch=dict(
                    embed_dims=16,
                    depths=[1, 1],
                    num_heads=[1, 2],
                    extra_norm_every_n_blocks=0,
                ),
                img_size=32,
                window_size=4,
                out_indices=(1,),
                pretrained_window_sizes=[0, 0],
            ),
            r'.*attn\.w_msa\.qkv',
            'WindowMSAV2',
        ),
    ],
)
def test_attention_reading_weight_directly_is_refused(
    backbone, pattern, parent
):
    model = MODELS.build(backbone)
    with pytest.raises(TypeError, match=f'{parent} reads `qkv.weight`'):
        apply_lora(model, [dict(pattern=pattern)])


def test_targets_matching_nothing_are_named():
    with pytest.raises(ValueError, match=r"\['blocks.*qkv'\] match no"):
        apply_lora(_vit(), [dict(pattern=QKV), dict(pattern=r'blocks.*qkv')])
    with pytest.raises(ValueError, match='unknown'):
        apply_lora(_vit(), [dict(pattern=QKV, ranks=4)])
    model = _vit()
    apply_lora(model, [dict(pattern=QKV)])
    with pytest.raises(TypeError, match='already has a LoRA'):
        apply_lora(model, [dict(pattern=QKV)])


def test_builder_returns_the_backbone_itself():
    model = MODELS.build(
        dict(
            type='LoRA',
            module=TINY_VIT,
            targets=[dict(pattern=QKV, parts=QV, rank=2)],
            alpha=1,
        )
    )
    assert type(model).__name__ == 'VisionTransformer'
    layers = dict(lora_layers(model))
    assert set(layers) == {'layers.0.attn.qkv', 'layers.1.attn.qkv'}
    assert all(m.rank == 2 and m.scaling == 0.5 for m in layers.values())


def test_frozen_backbone_keeps_lora_dropout_training():
    """freeze: backbone frozen (eval mode) but LoRA trainable: the LoRA
    layers (and so their dropout) stay in training mode."""
    model = MODELS.build(
        dict(
            type='MultiTaskModel',
            backbone=dict(
                type='LoRA',
                module=TINY_VIT,
                targets=[dict(pattern=QKV, dropout=0.1)],
            ),
            tasks=dict(
                cls=dict(
                    type='ClsTaskHead',
                    head=dict(
                        type='mmpretrain.VisionTransformerClsHead',
                        num_classes=5,
                        in_channels=32,
                    ),
                )
            ),
            freeze=dict(backbone=True, trainable=[r'\.lora_', r'^heads\.']),
        )
    )
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        '.lora_' in n or n.startswith('heads.') for n in trainable
    )
    for name, layer in lora_layers(model):
        assert layer.training and layer.lora_dropout.training, name
    assert not model.backbone.layers[0].ffn.training
    assert not model.backbone.training
