# Copyright (c) mmvfm contributors. All rights reserved.
"""Gradient checkpointing of a ViT's blocks: the same gradients (dropout
and drop path included), unchanged keys and classes, fewer activations
kept; a pattern that matches nothing is named."""

import copy

import pytest
import torch
from mmdet.registry import MODELS

from mmvfm.models.common import enable_gradient_checkpointing
from mmvfm.models.peft import apply_lora

pytestmark = pytest.mark.usefixtures('one_thread')
VIT = dict(
    type='mmpretrain.VisionTransformer',
    arch=dict(
        embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64
    ),
    img_size=32,
    patch_size=8,
    drop_rate=0.1,
    drop_path_rate=0.2,
    out_type='featmap',
)


def _grads(model, x, seed=0):
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(x)[0]
    out.square().mean().backward()
    return out.detach(), {
        n: p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }


def test_same_gradients_with_dropout_and_same_keys():
    torch.manual_seed(0)
    plain = MODELS.build(copy.deepcopy(VIT))
    ckpt = copy.deepcopy(plain)
    names = enable_gradient_checkpointing(ckpt, r'layers\.\d+')
    assert names == ['layers.0', 'layers.1', 'layers.2']
    assert type(ckpt.layers[0]).__name__ == type(plain.layers[0]).__name__
    assert isinstance(ckpt.layers[0], type(plain.layers[0]))
    assert ckpt.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    out_p, g_p = _grads(plain, x)
    out_c, g_c = _grads(ckpt, x)
    torch.testing.assert_close(out_c, out_p)
    assert g_c.keys() == g_p.keys() and g_p
    for name in g_p:
        torch.testing.assert_close(g_c[name], g_p[name], msg=name)
    # a deep copy keeps working, on its own parameters
    copied = copy.deepcopy(ckpt)
    ckpt.zero_grad(set_to_none=True)
    out_cc, g_cc = _grads(copied, x)
    torch.testing.assert_close(out_cc, out_p)
    assert all(p.grad is None for p in ckpt.parameters())
    for name in g_p:
        torch.testing.assert_close(g_cc[name], g_p[name], msg=name)


def test_with_lora_and_builder():
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='LoRA',
            module=dict(
                type='GradientCheckpointing',
                module=copy.deepcopy(VIT),
                pattern=r'layers\.\d+',
            ),
            targets=[dict(pattern=r'layers\.\d+\.attn\.qkv')],
        )
    )
    assert type(model).__name__ == 'VisionTransformer'
    reference = copy.deepcopy(model)
    for layer in reference.layers:  # the plain class back
        layer.__class__ = layer.__class__.__mro__[1]
    for m in (model, reference):
        for n, p in m.named_parameters():
            p.requires_grad_('lora_' in n)
        with torch.no_grad():
            for layer in m.layers:
                layer.attn.qkv.lora_B.fill_(0.01)
    x = torch.randn(2, 3, 32, 32)
    _, g_c = _grads(model, x)
    _, g_p = _grads(reference, x)
    assert set(g_c) == {
        f'layers.{i}.attn.qkv.lora_{m}' for i in range(3) for m in 'AB'
    }
    for name in g_p:
        torch.testing.assert_close(g_c[name], g_p[name], msg=name)


def test_fewer_saved_activations():
    """What autograd keeps for backward, counted by saved-tensor hooks."""
    torch.manual_seed(0)
    plain = MODELS.build(copy.deepcopy(VIT))
    ckpt = copy.deepcopy(plain)
    enable_gradient_checkpointing(ckpt, r'layers\.\d+')
    x = torch.randn(2, 3, 32, 32)

    def saved_bytes(model):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)[0].sum()
        return total[0]

    assert saved_bytes(ckpt) < 0.5 * saved_bytes(plain)


def test_pattern_matching_nothing_is_named():
    model = MODELS.build(copy.deepcopy(VIT))
    with pytest.raises(ValueError, match=r"'blocks\\\\.\\\\d\+' matches no"):
        enable_gradient_checkpointing(model, r'blocks\.\d+')
    apply_lora(model, [dict(pattern=r'layers\.0\.attn\.qkv')])
