# Copyright (c) mmvfm contributors. All rights reserved.
"""tools/model_converters/open_clip_to_mmvfm.py on state dicts built by hand
in open_clip's (OpenAI CLIP's) and EVA-CLIP's layouts.

The open_clip towers are checked numerically (float64, 1e-6): a reference
forward written here with plain torch ops on the ORIGINAL keys (pre-norm
blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, ``nn.MultiheadAttention``
semantics for ``in_proj`` / ``out_proj``, exact GELU, LayerNorm eps 1e-5)
against mmpretrain's ``VisionTransformer`` + ``image_proj`` and mmvfm's
``TextTransformer`` loaded strictly with the converted keys.
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import load_tool
from mmpretrain.models import VisionTransformer

from mmvfm.models.language import TextTransformer

pytestmark = pytest.mark.usefixtures('one_thread')
W, LAYERS, HEADS, PATCH, IMG = 32, 2, 2, 8, 32
CTX, VOCAB, E, FFN = 16, 64, 24, 128  # FFN: open_clip's mlp_ratio 4
TOKENS = (IMG // PATCH) ** 2 + 1
EPS = 1e-5  # open_clip's LayerNorm
TOL = dict(rtol=0, atol=1e-6)
DT = torch.float64


@pytest.fixture(scope='module')
def tool():
    return load_tool('model_converters/open_clip_to_mmvfm.py')


def _rnd_fn(seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=gen, dtype=DT) * scale + shift

    return rnd


def _blocks(rnd, prefix, layer_scale=False):
    """open_clip's ResidualAttentionBlock keys (nn.MultiheadAttention)."""
    state = {}
    for i in range(LAYERS):
        b = f'{prefix}transformer.resblocks.{i}.'
        for ln in ('ln_1', 'ln_2'):
            state[b + ln + '.weight'] = rnd(W, scale=0.1, shift=1.0)
            state[b + ln + '.bias'] = rnd(W, scale=0.1)
        state.update(
            {
                b + 'attn.in_proj_weight': rnd(3 * W, W, scale=W**-0.5),
                b + 'attn.in_proj_bias': rnd(3 * W, scale=0.1),
                b + 'attn.out_proj.weight': rnd(W, W, scale=W**-0.5),
                b + 'attn.out_proj.bias': rnd(W, scale=0.1),
                b + 'mlp.c_fc.weight': rnd(FFN, W, scale=W**-0.5),
                b + 'mlp.c_fc.bias': rnd(FFN, scale=0.1),
                b + 'mlp.c_proj.weight': rnd(W, FFN, scale=FFN**-0.5),
                b + 'mlp.c_proj.bias': rnd(W, scale=0.1),
            }
        )
        if layer_scale:
            state[b + 'ls_1.gamma'] = rnd(W, scale=0.1, shift=0.5)
            state[b + 'ls_2.gamma'] = rnd(W, scale=0.1, shift=0.5)
    return state


def _text_state(rnd, prefix=''):
    state = {
        prefix + 'token_embedding.weight': rnd(VOCAB, W),
        prefix + 'positional_embedding': rnd(CTX, W, scale=0.1),
        prefix + 'ln_final.weight': rnd(W, scale=0.1, shift=1.0),
        prefix + 'ln_final.bias': rnd(W, scale=0.1),
        prefix + 'text_projection': rnd(W, E, scale=W**-0.5),
    }
    state.update(_blocks(rnd, prefix))
    return state


def open_clip_state(layer_scale=False, ln_pre=True, text_prefix=''):
    """A CLIP ViT in open_clip's layout: random values, right shapes."""
    rnd = _rnd_fn()
    state = {
        'visual.conv1.weight': rnd(W, 3, PATCH, PATCH, scale=0.05),
        'visual.class_embedding': rnd(W, scale=W**-0.5),
        'visual.positional_embedding': rnd(TOKENS, W, scale=W**-0.5),
        'visual.ln_post.weight': rnd(W, scale=0.1, shift=1.0),
        'visual.ln_post.bias': rnd(W, scale=0.1),
        'visual.proj': rnd(W, E, scale=W**-0.5),
        'logit_scale': torch.tensor(math.log(1 / 0.07), dtype=DT),
    }
    if ln_pre:
        state['visual.ln_pre.weight'] = rnd(W, scale=0.1, shift=1.0)
        state['visual.ln_pre.bias'] = rnd(W, scale=0.1)
    state.update(_blocks(rnd, 'visual.', layer_scale))
    state.update(_text_state(rnd, text_prefix))
    return state


# --- the reference: open_clip's forward on the original keys ---------------
def ref_attention(x, sd, p, mask=None):
    """``nn.MultiheadAttention(W, HEADS)`` self-attention, batch first."""
    N, L, C = x.shape
    q, k, v = F.linear(
        x, sd[p + 'in_proj_weight'], sd[p + 'in_proj_bias']
    ).chunk(3, dim=-1)

    def heads(t):
        return t.reshape(N, L, HEADS, C // HEADS).transpose(1, 2)

    attn = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(C // HEADS)
    if mask is not None:
        attn = attn + mask
    out = (attn.softmax(-1) @ heads(v)).transpose(1, 2).reshape(N, L, C)
    return F.linear(out, sd[p + 'out_proj.weight'], sd[p + 'out_proj.bias'])


def _ln(x, sd, name):
    return F.layer_norm(x, (W,), sd[name + '.weight'], sd[name + '.bias'], EPS)


def ref_blocks(x, sd, prefix, mask=None, act=F.gelu):
    for i in range(LAYERS):
        b = f'{prefix}transformer.resblocks.{i}.'
        g1 = sd.get(b + 'ls_1.gamma', 1.0)
        g2 = sd.get(b + 'ls_2.gamma', 1.0)
        x = x + g1 * ref_attention(
            _ln(x, sd, b + 'ln_1'), sd, b + 'attn.', mask
        )
        h = F.linear(
            _ln(x, sd, b + 'ln_2'),
            sd[b + 'mlp.c_fc.weight'],
            sd[b + 'mlp.c_fc.bias'],
        )
        h = F.linear(
            act(h), sd[b + 'mlp.c_proj.weight'], sd[b + 'mlp.c_proj.bias']
        )
        x = x + g2 * h
    return x


def ref_image(sd, img, act=F.gelu):
    """open_clip ``VisionTransformer`` (pool_type 'tok'): ln_post(x)[:, 0]
    @ proj."""
    x = F.conv2d(img, sd['visual.conv1.weight'], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)  # (N, grid**2, W)
    cls = sd['visual.class_embedding'].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd['visual.positional_embedding']
    if 'visual.ln_pre.weight' in sd:
        x = _ln(x, sd, 'visual.ln_pre')
    x = ref_blocks(x, sd, 'visual.', act=act)
    return _ln(x, sd, 'visual.ln_post')[:, 0] @ sd['visual.proj']


def ref_text(sd, ids):
    """open_clip text tower: causal blocks, ln_final, the features at the
    arg-max id (the end-of-text token) @ text_projection."""
    L = ids.shape[1]
    x = sd['token_embedding.weight'][ids] + sd['positional_embedding'][:L]
    mask = torch.full((L, L), float('-inf'), dtype=DT).triu(1)
    x = _ln(ref_blocks(x, sd, '', mask), sd, 'ln_final')
    pooled = x[torch.arange(len(ids)), ids.argmax(-1)]
    return x, pooled @ sd['text_projection']


def vit_cfg(pre_norm=True, layer_scale=False, eps=EPS):
    """Keyword arguments of mmpretrain's ViT matching the open_clip tower."""
    return dict(
        arch=dict(
            embed_dims=W,
            num_layers=LAYERS,
            num_heads=HEADS,
            feedforward_channels=FFN,
        ),
        img_size=IMG,
        patch_size=PATCH,
        pre_norm=pre_norm,
        out_type='cls_token',
        final_norm=True,
        with_cls_token=True,
        norm_cfg=dict(type='LN', eps=eps),
        layer_scale_init_value=0.1 if layer_scale else 0.0,
    )


def build_vit(pre_norm=True, layer_scale=False, eps=EPS):
    return VisionTransformer(**vit_cfg(pre_norm, layer_scale, eps))


def text_cfg():
    """Keyword arguments of ``TextTransformer`` matching the text tower."""
    return dict(
        vocab_size=VOCAB,
        width=W,
        depth=LAYERS,
        num_heads=HEADS,
        max_length=CTX,
        causal=True,
        pool='eos',
        proj_dims=E,
    )


def build_text():
    return TextTransformer(**text_cfg())


def _part(out, prefix):
    return {
        k[len(prefix) :]: v for k, v in out.items() if k.startswith(prefix)
    }


def _token_ids():
    """3 texts in CLIP's scheme: start (62), words in 1..61, end-of-text
    (63, the largest id) last, then padding 0; one fills the context."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.zeros(3, CTX, dtype=torch.long)
    for row, length in enumerate((5, CTX, 9)):
        ids[row, 1 : length - 1] = torch.randint(
            1, VOCAB - 2, (length - 2,), generator=gen
        )
        ids[row, 0], ids[row, length - 1] = VOCAB - 2, VOCAB - 1
    return ids


def test_reference_attention_is_torch_multihead_attention():
    """The reference attention is what open_clip's blocks run."""
    sd = open_clip_state()
    p = 'visual.transformer.resblocks.0.attn.'
    mha = nn.MultiheadAttention(W, HEADS, batch_first=True).to(DT)
    mha.load_state_dict(
        {
            'in_proj_weight': sd[p + 'in_proj_weight'],
            'in_proj_bias': sd[p + 'in_proj_bias'],
            'out_proj.weight': sd[p + 'out_proj.weight'],
            'out_proj.bias': sd[p + 'out_proj.bias'],
        }
    )
    x = _rnd_fn(3)(2, 5, W)
    mask = torch.full((5, 5), float('-inf'), dtype=DT).triu(1)
    with torch.no_grad():
        for m in (None, mask):
            want = mha(x, x, x, need_weights=False, attn_mask=m)[0]
            torch.testing.assert_close(ref_attention(x, sd, p, m), want, **TOL)


@pytest.mark.parametrize(
    'variant', ['plain', 'layer_scale', 'no_ln_pre'], ids=str
)
def test_image_tower_matches_open_clip(tool, variant):
    sd = open_clip_state(
        layer_scale=variant == 'layer_scale', ln_pre=variant != 'no_ln_pre'
    )
    out = tool.convert(sd)
    vit = build_vit(
        pre_norm=variant != 'no_ln_pre', layer_scale=variant == 'layer_scale'
    ).to(DT)
    vit.load_state_dict(_part(out, 'image_encoder.'), strict=True)
    vit.eval()
    img = _rnd_fn(2)(3, 3, IMG, IMG)
    with torch.no_grad():
        got = F.linear(vit(img)[-1], out['image_proj.weight'])
        want = ref_image(sd, img)
    assert got.shape == (3, E)
    torch.testing.assert_close(got, want, **TOL)
    if variant == 'no_ln_pre':
        bias = out['image_encoder.patch_embed.projection.bias']
        assert bias.shape == (W,) and bias.abs().max() == 0
    else:
        assert 'image_encoder.patch_embed.projection.bias' not in out
    if variant == 'plain':
        # the check can see what the converter cannot carry over: QuickGELU
        # weights and mmpretrain's default eps are both off by far more
        quick = ref_image(sd, img, act=lambda x: x * torch.sigmoid(1.702 * x))
        assert (quick - want).abs().max() > 1e-3
        vit6 = build_vit(eps=1e-6).to(DT)
        vit6.load_state_dict(_part(out, 'image_encoder.'), strict=True)
        vit6.eval()
        with torch.no_grad():
            off = F.linear(vit6(img)[-1], out['image_proj.weight'])
        assert (off - want).abs().max() > 1e-6


def test_text_tower_matches_open_clip(tool):
    sd = open_clip_state()
    out = tool.convert(sd)
    text = build_text().to(DT)
    text.load_state_dict(_part(out, 'text_encoder.'), strict=True)
    text.eval()
    ids = _token_ids()
    with torch.no_grad():
        tokens, pooled = text(ids)
        want_tokens, want = ref_text(sd, ids)
    assert pooled.shape == (3, E)
    torch.testing.assert_close(pooled, want, **TOL)
    real = ids != 0  # padding differs (masked as keys only here)
    torch.testing.assert_close(tokens[real], want_tokens[real], **TOL)
    assert out['loss_module.logit_scale'].shape == ()
    torch.testing.assert_close(
        out['loss_module.logit_scale'], sd['logit_scale']
    )
    # exactly the CLIP model's parts, nothing left over
    assert {k.split('.')[0] for k in out} == {
        'image_encoder',
        'image_proj',
        'text_encoder',
        'loss_module',
    }


def test_prefixes_and_openai_extras(tool):
    """``text.`` (CustomTextCLIP) and ``module.`` (DDP) prefixes give the
    same result; OpenAI's metadata entries and attn_mask are dropped."""
    plain = tool.convert(open_clip_state())
    sd = open_clip_state(text_prefix='text.')
    sd.update(
        {
            'input_resolution': torch.tensor(IMG),
            'context_length': torch.tensor(CTX),
            'vocab_size': torch.tensor(VOCAB),
            'text.attn_mask': torch.zeros(CTX, CTX),
        }
    )
    ddp = {'module.' + k: v for k, v in sd.items()}
    out, info = tool.convert_verbose(ddp)
    assert out.keys() == plain.keys()
    for key in out:
        torch.testing.assert_close(out[key], plain[key])
    assert sorted(info['dropped']) == [
        'context_length',
        'input_resolution',
        'text.attn_mask',
        'vocab_size',
    ]
    assert info['layout'] == 'open_clip'
    assert info['arch']['image_encoder'] == dict(
        embed_dims=W,
        num_layers=LAYERS,
        feedforward_channels=FFN,
        patch_size=PATCH,
        img_size=IMG,
        pre_norm=True,
        layer_scale=False,
    )
    assert info['arch']['text_encoder'] == dict(
        vocab_size=VOCAB,
        width=W,
        depth=LAYERS,
        max_length=CTX,
        mlp_ratio=4.0,
        proj_dims=E,
    )
    # a Linear text projection without bias is taken as is
    sd = open_clip_state()
    sd['text_projection.weight'] = sd.pop('text_projection').t()
    torch.testing.assert_close(
        tool.convert(sd)['text_encoder.proj.weight'],
        plain['text_encoder.proj.weight'],
    )


@pytest.mark.parametrize(
    'extra, match',
    [
        ('visual.transformer.resblocks.0.attn.q_norm.weight', 'q_norm'),
        ('text_projection.bias', r'text_projection\.bias'),
        ('logit_bias', 'logit_bias'),  # SigLIP
        ('visual.layer1.0.conv1.weight', r'visual\.layer1.*ModifiedResNet'),
        ('visual.attnpool.positional_embedding', 'ModifiedResNet'),
        ('visual.trunk.blocks.0.norm1.weight', r'visual\.trunk.*timm'),
        ('visual.attn_pool.query', 'attention pooling'),
        ('text.cls_emb', 'CoCa'),
        ('transformer.resblocks.0.ls_1.gamma', 'text tower'),
    ],
)
def test_refused_keys_are_named(tool, extra, match):
    sd = open_clip_state()
    sd[extra] = torch.zeros(1)
    with pytest.raises(KeyError, match=match):
        tool.convert(sd)


def _eva_clip_state(head_bias=0.0):
    """EVA01-CLIP: EVA vision keys, open_clip text keys (top level)."""
    rnd = _rnd_fn()
    state = {
        'visual.cls_token': rnd(1, 1, W),
        'visual.pos_embed': rnd(1, TOKENS, W),
        'visual.patch_embed.proj.weight': rnd(W, 3, PATCH, PATCH),
        'visual.patch_embed.proj.bias': rnd(W),
        'visual.norm.weight': rnd(W),
        'visual.norm.bias': rnd(W),
        'visual.head.weight': rnd(E, W),
        'visual.head.bias': torch.full((E,), head_bias, dtype=DT),
        'logit_scale': torch.tensor(2.0, dtype=DT),
    }
    for i in range(LAYERS):
        b = f'visual.blocks.{i}.'
        for name, shape in (
            ('norm1.weight', (W,)),
            ('norm1.bias', (W,)),
            ('attn.qkv.weight', (3 * W, W)),
            ('attn.q_bias', (W,)),
            ('attn.v_bias', (W,)),
            ('attn.proj.weight', (W, W)),
            ('attn.proj.bias', (W,)),
            ('norm2.weight', (W,)),
            ('norm2.bias', (W,)),
            ('mlp.fc1.weight', (FFN, W)),
            ('mlp.fc1.bias', (FFN,)),
            ('mlp.fc2.weight', (W, FFN)),
            ('mlp.fc2.bias', (W,)),
        ):
            state[b + name] = rnd(*shape)
    state.update(_text_state(rnd))
    return state


def test_eva_clip_layout(tool):
    sd = _eva_clip_state()
    out, info = tool.convert_verbose(sd)
    assert (
        info['layout'] == 'eva_clip'
        and 'visual.head.bias' in (info['dropped'])
    )
    vit = build_vit(pre_norm=False, eps=1e-6)
    vit.load_state_dict(_part(out, 'image_encoder.'), strict=True)
    build_text().load_state_dict(_part(out, 'text_encoder.'), strict=True)
    torch.testing.assert_close(
        out['image_proj.weight'], sd['visual.head.weight']
    )
    q, k, _ = out['image_encoder.layers.1.attn.qkv.bias'].chunk(3)
    torch.testing.assert_close(q, sd['visual.blocks.1.attn.q_bias'])
    assert k.abs().max() == 0
    assert any('pre_norm=False' in n for n in info['notes'])
    # a trained (non-zero) head bias has no place in image_proj
    sd = _eva_clip_state(head_bias=0.5)
    with pytest.raises(KeyError, match=r'visual\.head\.bias.*drop_head_bias'):
        tool.convert(sd)
    out, info = tool.convert_verbose(sd, drop_head_bias=True)
    assert 'visual.head.bias' in info['dropped']
    assert any('differ' in n for n in info['notes'])
    sd = _eva_clip_state()
    sd['visual.fc_norm.weight'] = torch.ones(W)
    with pytest.raises(KeyError, match=r'visual\.fc_norm\.weight'):
        tool.convert(sd)
    # EVA02's SwiGLU: refused by the EVA-CLIP rules, with the key
    sd = _eva_clip_state()
    sd['visual.blocks.0.mlp.w12.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match=r'visual\.blocks\.0\.mlp\.w12'):
        tool.convert(sd)


# torch.jit.script (deprecated) makes a TorchScript archive like OpenAI's
@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_command_line(tool, tmp_path, capsys):
    sd = open_clip_state()
    src, dst = str(tmp_path / 'open_clip.bin'), str(tmp_path / 'out.pth')
    torch.save({'epoch': 3, 'state_dict': sd}, src)
    tool.main([src, dst])
    saved = torch.load(dst, weights_only=True)
    want = tool.convert(sd)
    assert saved['state_dict'].keys() == want.keys()
    meta = saved['meta']
    assert meta['layout'] == 'open_clip' and meta['converted_from'] == src
    assert meta['arch']['text_encoder']['vocab_size'] == VOCAB
    printed = capsys.readouterr().out
    assert f'wrote {len(want)} tensors' in printed
    assert 'dropped: nothing' in printed
    assert 'QuickGELU' in printed and 'tokenizer' in printed
    assert any('QuickGELU' in n for n in meta['notes'])
    # OpenAI's TorchScript archives: read with torch.jit.load
    root = nn.Module()
    for key, value in sd.items():
        *path, name = key.split('.')
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(value))
    ts = str(tmp_path / 'ViT-B-16.pt')
    torch.jit.script(root).save(ts)
    tool.main([ts, dst, '-v'])
    assert torch.load(dst, weights_only=True)['state_dict'].keys() == (
        want.keys()
    )
    assert 'visual.proj -> image_proj.weight' in capsys.readouterr().out
    # errors
    sd['visual.trunk.head.weight'] = torch.zeros(1)
    torch.save(sd, src)
    with pytest.raises(SystemExit, match=r'error: visual\.trunk'):
        tool.main([src, dst])
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([str(tmp_path / 'missing.pt'), dst])


def test_loads_strictly_into_the_clip_model(tool, tmp_path):
    """The converted file is a state dict of mmvfm's ``CLIP`` built with
    the matching config (the image features equal open_clip's)."""
    from mmdet.registry import MODELS

    sd = open_clip_state()
    out = tool.convert(sd)
    vit = build_vit()
    cfg = dict(
        type='CLIP',
        image_encoder=dict(type='mmpretrain.VisionTransformer', **vit_cfg()),
        text_encoder=dict(type='TextTransformer', **text_cfg()),
        tokenizer=dict(type='BPETokenizer', file=str(tmp_path / 'none')),
        embed_dims=E,
        image_dims=vit.embed_dims,
    )
    model = MODELS.build(cfg).to(DT).eval()
    model.load_state_dict(out, strict=True)
    img = torch.randn(2, 3, IMG, IMG, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(
            model.extract_image_feat(img), ref_image(sd, img), **TOL
        )
