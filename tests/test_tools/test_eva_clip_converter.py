# Copyright (c) mmvfm contributors. All rights reserved.
"""tools/model_converters/eva_clip_to_mmpretrain.py on a state dict built
in EVA-CLIP's layout: every tensor lands where mmpretrain's ViT expects it
(strict load), q/v biases become qkv.bias = [q, 0, v], unknown keys are
named."""

import pytest
import torch
from conftest import load_tool
from mmdet.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')
D, LAYERS, FFN = 32, 2, 64


def _eva_clip_state():
    """EVA01-CLIP's visual keys with random values of the right shapes."""
    gen = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    state = {
        'visual.cls_token': rnd(1, 1, D),
        'visual.pos_embed': rnd(1, 17, D),
        'visual.patch_embed.proj.weight': rnd(D, 3, 8, 8),
        'visual.patch_embed.proj.bias': rnd(D),
        'visual.norm.weight': rnd(D),
        'visual.norm.bias': rnd(D),
        'visual.head.weight': rnd(16, D),
        'visual.head.bias': rnd(16),
        'text.token_embedding.weight': rnd(10, D),  # not vision: ignored
        'logit_scale': rnd(1),
    }
    for i in range(LAYERS):
        b = f'visual.blocks.{i}.'
        state.update(
            {
                b + 'norm1.weight': rnd(D),
                b + 'norm1.bias': rnd(D),
                b + 'attn.qkv.weight': rnd(3 * D, D),
                b + 'attn.q_bias': rnd(D),
                b + 'attn.v_bias': rnd(D),
                b + 'attn.proj.weight': rnd(D, D),
                b + 'attn.proj.bias': rnd(D),
                b + 'norm2.weight': rnd(D),
                b + 'norm2.bias': rnd(D),
                b + 'mlp.fc1.weight': rnd(FFN, D),
                b + 'mlp.fc1.bias': rnd(FFN),
                b + 'mlp.fc2.weight': rnd(D, FFN),
                b + 'mlp.fc2.bias': rnd(D),
                b + 'gamma_1': rnd(D),
                b + 'gamma_2': rnd(D),
            }
        )
    return state


def test_converted_state_loads_strictly_into_mmpretrain_vit(tmp_path):
    tool = load_tool('model_converters/eva_clip_to_mmpretrain.py')
    src = _eva_clip_state()
    out, head = tool.convert(src)
    assert set(head) == {'head.weight', 'head.bias'}
    vit = MODELS.build(
        dict(
            type='mmpretrain.VisionTransformer',
            arch=dict(
                embed_dims=D,
                num_layers=LAYERS,
                num_heads=2,
                feedforward_channels=FFN,
            ),
            img_size=32,
            patch_size=8,
            layer_scale_init_value=0.1,
        )
    )
    vit.load_state_dict(out, strict=True)
    sd = vit.state_dict()
    torch.testing.assert_close(
        sd['layers.1.ffn.layers.0.0.weight'],
        src['visual.blocks.1.mlp.fc1.weight'],
    )
    torch.testing.assert_close(
        sd['layers.0.attn.gamma1.weight'], src['visual.blocks.0.gamma_1']
    )
    torch.testing.assert_close(sd['ln1.bias'], src['visual.norm.bias'])
    q, k, v = sd['layers.0.attn.qkv.bias'].chunk(3)
    torch.testing.assert_close(q, src['visual.blocks.0.attn.q_bias'])
    assert k.abs().max() == 0
    torch.testing.assert_close(v, src['visual.blocks.0.attn.v_bias'])
    # the command line
    ckpt = str(tmp_path / 'src.pt')
    torch.save(src, ckpt)
    dst, head_out = str(tmp_path / 'out.pth'), str(tmp_path / 'head.pth')
    tool.main([ckpt, dst, '--head-out', head_out])
    saved = torch.load(dst, weights_only=True)['state_dict']
    assert saved.keys() == out.keys()
    assert set(torch.load(head_out, weights_only=True)) == set(head)


def test_unknown_and_incomplete_keys_are_named():
    tool = load_tool('model_converters/eva_clip_to_mmpretrain.py')
    src = _eva_clip_state()
    src['visual.blocks.0.mlp.w12.weight'] = torch.zeros(1)  # EVA02 SwiGLU
    with pytest.raises(KeyError, match=r'visual.blocks.0.mlp.w12.weight'):
        tool.convert(src)
    src = _eva_clip_state()
    del src['visual.blocks.1.attn.v_bias']
    with pytest.raises(KeyError, match=r'blocks.1.attn: has \[.q_bias.\]'):
        tool.convert(src)
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main(['missing.pt', 'out.pth'])
