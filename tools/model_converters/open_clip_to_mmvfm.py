# Copyright (c) mmvfm contributors. All rights reserved.
"""Convert an open_clip / OpenAI CLIP checkpoint with a ViT image tower (or
an EVA-CLIP one) into the state dict of mmvfm's ``CLIP`` model
(``image_encoder``: mmpretrain's ``VisionTransformer``; ``image_proj``;
``text_encoder``: :class:`~mmvfm.models.language.TextTransformer`;
``loss_module.logit_scale``).

Mapping, open_clip -> mmvfm (``i`` the block; ``B`` =
``transformer.resblocks.i``; text keys with or without open_clip's
``text.`` prefix; a ``module.`` prefix is stripped first):

==================================  ======================================
``visual.conv1.weight``             ``image_encoder.patch_embed.projection
                                    .weight``
``visual.class_embedding`` (D,)     ``image_encoder.cls_token`` (1, 1, D)
``visual.positional_embedding``     ``image_encoder.pos_embed``
(N+1, D)                            (1, N+1, D)
``visual.ln_pre``                   ``image_encoder.pre_norm``
``visual.B.ln_1`` / ``ln_2``        ``image_encoder.layers.i.ln1`` /
                                    ``ln2``
``visual.B.attn.in_proj_weight``    ``image_encoder.layers.i.attn.qkv
/ ``in_proj_bias``                  .weight`` / ``.bias``
``visual.B.attn.out_proj``          ``image_encoder.layers.i.attn.proj``
``visual.B.mlp.c_fc`` / ``c_proj``  ``image_encoder.layers.i.ffn.layers
                                    .0.0`` / ``.ffn.layers.1``
``visual.B.ls_1.gamma`` / ``ls_2``  ``image_encoder.layers.i.attn.gamma1
                                    .weight`` / ``.ffn.gamma2.weight``
``visual.ln_post``                  ``image_encoder.ln1`` (final norm)
``visual.proj`` (D, E), ``x @ P``   ``image_proj.weight`` = P^T (E, D)
``token_embedding.weight``          ``text_encoder.token_embed.weight``
``positional_embedding`` (L, W)     ``text_encoder.pos_embed`` (L, W)
``B.ln_1`` / ``ln_2``               ``text_encoder.layers.layers.i.norm1``
                                    / ``norm2``
``B.attn.in_proj_weight`` / bias    ``text_encoder.layers.layers.i
                                    .self_attn.in_proj_weight`` / bias
``B.attn.out_proj``                 ``...layers.i.self_attn.out_proj``
``B.mlp.c_fc`` / ``c_proj``         ``...layers.i.linear1`` / ``linear2``
``ln_final``                        ``text_encoder.norm``
``text_projection`` (W, E)          ``text_encoder.proj.weight`` = P^T
(or a bias-free Linear's weight)    (E, W)
``logit_scale``                     ``loss_module.logit_scale`` (a scalar)
==================================  ======================================

Dropped: ``attn_mask`` buffers and OpenAI's ``input_resolution``,
``context_length``, ``vocab_size`` entries. Without ``visual.ln_pre``
(open_clip's ``no_ln_pre``) the patch embedding gets a zero bias: build
the ViT with ``pre_norm=False`` (with ``pre_norm=True`` it has no bias).

EVA-CLIP (``visual.blocks.*``, ``visual.patch_embed.*``): the vision
tower goes through ``eva_clip_to_mmpretrain.py``'s ``convert`` (its
rules; build the ViT with ``pre_norm=False`` and, for ``gamma_1/2``,
``layer_scale_init_value > 0``), ``visual.head.weight`` (E, D) becomes
``image_proj.weight`` as is, and the text tower is open_clip's layout.
``image_proj`` has no bias: a non-zero ``visual.head.bias`` is refused
unless ``--drop-head-bias`` (the image features then differ).

Refused with the key named (``KeyError``): ModifiedResNet towers
(``visual.layer1...``, ``visual.attnpool``), timm towers
(``visual.trunk.``), attention pooling (``visual.attn_pool``, CoCa),
CoCa's text ``cls_emb``, layer scale in the text tower, a projection
bias, and any other key without a counterpart.

NOT in the weights (check the source model's config; printed as notes and
kept in the output's ``meta``):

- activation: mmpretrain's ViT and ``TextTransformer`` use exact GELU.
  OpenAI's CLIP weights (and open_clip's ``-quickgelu`` models) were
  trained with QuickGELU, ``x * sigmoid(1.702 x)``: with them the
  converted model is an approximation, not the original;
- LayerNorm eps: open_clip's is 1e-5, mmpretrain ViT's default 1e-6:
  build the ViT with ``norm_cfg=dict(type='LN', eps=1e-5)`` (EVA-CLIP's
  vision tower uses 1e-6; ``TextTransformer``'s 1e-5 matches both);
- heads: ``num_heads`` is not stored (open_clip: width // 64 by default);
- pooling: open_clip's default (``pool_type='tok'``, ``ln_post`` before
  pooling) is ``out_type='cls_token'`` with ``final_norm=True``; models
  with average pooling or ``final_ln_after_pool`` are not equal;
- tokenizer: the text weights need CLIP's own BPE tokenizer (49408 ids,
  end-of-text = 49407 the largest id, padding 0), which mmvfm does not
  ship: mmvfm's ``BPETokenizer`` is another vocabulary, and text features
  from its ids are meaningless. open_clip pools the text at the arg-max
  id (the end-of-text token), ``TextTransformer`` (``pool='eos'``) at the
  last non-zero id: the same when end-of-text is the last non-padding
  token (CLIP's tokenizer puts it there) and the text holds no id 0
  (``!`` in CLIP's vocabulary; ``TextTransformer`` takes id 0 for
  padding). ``max_length`` must be the checkpoint's context length (77).

Usage (OpenAI's ``.pt`` files are TorchScript archives, opened with
``torch.jit.load``: convert only files you trust)::

    python tools/model_converters/open_clip_to_mmvfm.py \\
        open_clip_pytorch_model.bin clip_vit-b16_mmvfm.pth
"""

import argparse
import importlib.util
import os
import os.path as osp
import re
import sys
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

# run from a checkout: mmvfm importable without an install
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmvfm.fileio import (  # noqa: E402
    CheckpointError,
    TorchScriptArchiveError,
    safe_load,
)
from mmvfm.fileio.cli import add_unsafe_load_argument  # noqa: E402


def _cls(t: Tensor) -> Tensor:
    return t.reshape(1, 1, -1)


def _pos(t: Tensor) -> Tensor:
    return t.unsqueeze(0)


def _transpose(t: Tensor) -> Tensor:
    return t.t().contiguous()


Rule = Tuple[str, str, Optional[Callable[[Tensor], Tensor]]]
B = r'^transformer\.resblocks\.(\d+)\.'
# on ``visual.``-stripped keys; results under ``image_encoder.``
VISUAL_RULES: List[Rule] = [
    (r'^conv1\.weight$', 'patch_embed.projection.weight', None),
    (r'^class_embedding$', 'cls_token', _cls),
    (r'^positional_embedding$', 'pos_embed', _pos),
    (r'^ln_pre\.(weight|bias)$', r'pre_norm.\1', None),
    (B + r'ln_1\.(weight|bias)$', r'layers.\1.ln1.\2', None),
    (B + r'attn\.in_proj_(weight|bias)$', r'layers.\1.attn.qkv.\2', None),
    (B + r'attn\.out_proj\.(weight|bias)$', r'layers.\1.attn.proj.\2', None),
    (B + r'ln_2\.(weight|bias)$', r'layers.\1.ln2.\2', None),
    (B + r'mlp\.c_fc\.(weight|bias)$', r'layers.\1.ffn.layers.0.0.\2', None),
    (B + r'mlp\.c_proj\.(weight|bias)$', r'layers.\1.ffn.layers.1.\2', None),
    (B + r'ls_1\.gamma$', r'layers.\1.attn.gamma1.weight', None),
    (B + r'ls_2\.gamma$', r'layers.\1.ffn.gamma2.weight', None),
    (r'^ln_post\.(weight|bias)$', r'ln1.\1', None),
]
# on ``text.``-stripped keys; results under ``text_encoder.``
L = r'layers.layers.\1.'
TEXT_RULES: List[Rule] = [
    (r'^token_embedding\.weight$', 'token_embed.weight', None),
    (r'^positional_embedding$', 'pos_embed', None),
    (B + r'ln_1\.(weight|bias)$', L + r'norm1.\2', None),
    (B + r'attn\.in_proj_(weight|bias)$', L + r'self_attn.in_proj_\2', None),
    (
        B + r'attn\.out_proj\.(weight|bias)$',
        L + r'self_attn.out_proj.\2',
        None,
    ),
    (B + r'ln_2\.(weight|bias)$', L + r'norm2.\2', None),
    (B + r'mlp\.c_fc\.(weight|bias)$', L + r'linear1.\2', None),
    (B + r'mlp\.c_proj\.(weight|bias)$', L + r'linear2.\2', None),
    (r'^ln_final\.(weight|bias)$', r'norm.\1', None),
    (r'^text_projection$', 'proj.weight', _transpose),
    (r'^text_projection\.weight$', 'proj.weight', None),
]
DROPPED = re.compile(
    r'^((text\.)?attn_mask|input_resolution|context_length|vocab_size)$'
)
# (pattern on the full key, what it is): refused before any mapping
REFUSED = [
    (
        r'^visual\.(layer\d|attnpool|bn\d)\.',
        "a ModifiedResNet image tower (CLIP RN50 & co.): mmvfm's CLIP "
        'converts ViT towers only',
    ),
    (
        r'^visual\.trunk\.',
        'a timm image tower (open_clip TimmModel): convert the trunk with '
        'a timm-to-mmpretrain converter instead',
    ),
    (
        r'^visual\.attn_pool',
        "attention pooling (CoCa): mmpretrain's ViT pools the class token",
    ),
    (r'^(text\.)?cls_emb$', "CoCa's text class embedding: no counterpart"),
    (
        r'^(text\.)?transformer\.resblocks\.\d+\.ls_[12]\.',
        'layer scale in the text tower: TextTransformer has none',
    ),
]
NOTES = [
    'activation: mmpretrain ViT and TextTransformer use exact GELU; '
    "OpenAI's CLIP weights (and open_clip '-quickgelu' models) were "
    'trained with QuickGELU, x * sigmoid(1.702 x): with those the '
    'converted model only approximates the original',
    "tokenizer: the text weights need CLIP's own BPE tokenizer (not "
    "shipped with mmvfm; mmvfm's BPETokenizer is another vocabulary). "
    'TextTransformer pools at the last non-zero id, open_clip at the '
    'arg-max id (end-of-text): equal when end-of-text is the last '
    "non-padding token and the text has no id 0 ('!' in CLIP's vocab, "
    "padding for TextTransformer); max_length must be the checkpoint's "
    'context length',
    'not stored in the weights: num_heads (open_clip: width // 64 by '
    "default); the image pooling (open_clip's default 'tok' pooling with "
    "ln_post before it = out_type='cls_token', final_norm=True; 'avg' "
    'pooling or final_ln_after_pool models are not equal)',
]
_EVA_TOOL = osp.join(
    osp.dirname(osp.abspath(__file__)), 'eva_clip_to_mmpretrain.py'
)


def _eva_tool():
    """``eva_clip_to_mmpretrain.py`` (next to this file) as a module."""
    name = '_mmvfm_tool_eva_clip_to_mmpretrain'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _EVA_TOOL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def _apply(rules: List[Rule], key: str) -> Optional[Tuple[str, Callable]]:
    for pattern, repl, fn in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new, fn
    return None


def _arch(out: Dict[str, Tensor]) -> dict:
    """Config values readable from the converted shapes."""
    arch = {}
    patch = out.get('image_encoder.patch_embed.projection.weight')
    if patch is not None:
        fc1 = out.get('image_encoder.layers.0.ffn.layers.0.0.weight')
        pos = out.get('image_encoder.pos_embed')
        grid = round((pos.shape[1] - 1) ** 0.5) if pos is not None else 0
        arch['image_encoder'] = dict(
            embed_dims=patch.shape[0],
            num_layers=len(
                {
                    k.split('.')[2]
                    for k in out
                    if k.startswith('image_encoder.layers.')
                }
            ),
            feedforward_channels=fc1.shape[0] if fc1 is not None else None,
            patch_size=patch.shape[-1],
            img_size=grid * patch.shape[-1],
            pre_norm='image_encoder.pre_norm.weight' in out,
            layer_scale='image_encoder.layers.0.attn.gamma1.weight' in out,
        )
    if 'image_proj.weight' in out:
        arch['embed_dims'] = out['image_proj.weight'].shape[0]
    tok = out.get('text_encoder.token_embed.weight')
    if tok is not None:
        prefix = 'text_encoder.layers.layers.'
        fc1 = out.get(prefix + '0.linear1.weight')
        proj = out.get('text_encoder.proj.weight')
        pos = out.get('text_encoder.pos_embed')
        arch['text_encoder'] = dict(
            vocab_size=tok.shape[0],
            width=tok.shape[1],
            depth=len(
                {
                    k[len(prefix) :].split('.')[0]
                    for k in out
                    if k.startswith(prefix)
                }
            ),
            max_length=pos.shape[0] if pos is not None else None,
            mlp_ratio=fc1.shape[0] / tok.shape[1] if fc1 is not None else None,
            proj_dims=proj.shape[0] if proj is not None else None,
        )
    return arch


def _refuse(key: str, why: str) -> KeyError:
    return KeyError(f'{key}: {why}')


def convert_verbose(
    state_dict: Dict[str, Tensor], drop_head_bias: bool = False
) -> Tuple[Dict[str, Tensor], dict]:
    """open_clip / OpenAI / EVA-CLIP state dict -> (mmvfm CLIP state dict,
    info): ``info`` holds ``layout`` (``'open_clip'`` or ``'eva_clip'``),
    ``mapped`` ((source, target) pairs), ``dropped`` (source keys),
    ``notes`` and ``arch`` (config values read from the shapes).

    Raises:
        KeyError: a refused layout or a key without a counterpart (named).
    """
    state = dict(state_dict)
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.') :]: v for k, v in state.items()}
    for key in sorted(state):
        for pattern, why in REFUSED:
            if re.match(pattern, key):
                raise _refuse(key, why)
    eva = any(
        k.startswith(('visual.blocks.', 'visual.patch_embed.')) for k in state
    )
    out, mapped, dropped = {}, [], []
    notes = list(NOTES)
    if eva:
        visual = {k: v for k, v in state.items() if k.startswith('visual.')}
        vit, head = _eva_tool().convert(visual)
        for key, value in vit.items():
            out['image_encoder.' + key] = value
            mapped.append(('visual.* (EVA-CLIP)', 'image_encoder.' + key))
        for key in sorted(head):
            value = head[key]
            nonzero = key == 'head.bias' and bool(value.abs().max() > 0)
            if key == 'head.weight':
                out['image_proj.weight'] = value
                mapped.append(('visual.head.weight', 'image_proj.weight'))
            elif key == 'head.bias' and (drop_head_bias or not nonzero):
                dropped.append('visual.head.bias')
                if nonzero:
                    notes.append(
                        'visual.head.bias was not zero and is dropped '
                        '(--drop-head-bias): the image features differ '
                        'from the original by it'
                    )
            elif key == 'head.bias':
                raise _refuse(
                    'visual.head.bias',
                    'not zero, and image_proj has no bias (drop it with '
                    'drop_head_bias=True / --drop-head-bias)',
                )
            else:
                raise _refuse(
                    'visual.' + key,
                    'EVA-CLIP with mean pooling (fc_norm) is not supported',
                )
        notes.append(
            'EVA-CLIP vision tower: build the ViT with pre_norm=False (it '
            'has a patch bias and no ln_pre), LayerNorm eps 1e-6 and, with '
            'gamma keys, layer_scale_init_value > 0; its key bias is zero'
        )
    for key in sorted(state):
        value = state[key]
        if eva and key.startswith('visual.'):
            continue
        if DROPPED.match(key):
            dropped.append(key)
            continue
        if key == 'logit_scale':
            out['loss_module.logit_scale'] = value.reshape(())
            mapped.append((key, 'loss_module.logit_scale'))
            continue
        if key == 'visual.proj':
            out['image_proj.weight'] = _transpose(value)
            mapped.append((key, 'image_proj.weight'))
            continue
        if key.startswith('visual.'):
            rules, prefix, short = VISUAL_RULES, 'image_encoder.', key[7:]
        else:
            rules, prefix = TEXT_RULES, 'text_encoder.'
            short = key[5:] if key.startswith('text.') else key
        hit = _apply(rules, short)
        if hit is None:
            raise _refuse(
                key, "no counterpart in mmvfm's CLIP layout (see the doc)"
            )
        new, fn = hit
        out[prefix + new] = fn(value) if fn is not None else value
        mapped.append((key, prefix + new))
    if (
        not eva
        and 'image_encoder.patch_embed.projection.weight' in out
        and 'image_encoder.pre_norm.weight' not in out
    ):
        weight = out['image_encoder.patch_embed.projection.weight']
        out['image_encoder.patch_embed.projection.bias'] = weight.new_zeros(
            weight.shape[0]
        )
        notes.append(
            'no visual.ln_pre: the patch embedding has a zero bias; build '
            'the ViT with pre_norm=False'
        )
    elif not eva and 'image_encoder.patch_embed.projection.weight' in out:
        notes.append(
            'open_clip vision tower: build the ViT with pre_norm=True, '
            "norm_cfg=dict(type='LN', eps=1e-5), out_type='cls_token'"
        )
    info = dict(
        layout='eva_clip' if eva else 'open_clip',
        mapped=mapped,
        dropped=dropped,
        notes=notes,
        arch=_arch(out),
    )
    return out, info


def convert(
    state_dict: Dict[str, Tensor], drop_head_bias: bool = False
) -> Dict[str, Tensor]:
    """open_clip / OpenAI / EVA-CLIP state dict -> mmvfm CLIP state dict
    (:func:`convert_verbose` without the report)."""
    return convert_verbose(state_dict, drop_head_bias)[0]


def _load(path: str, allow_unsafe: bool = False) -> Dict[str, Tensor]:
    try:
        ckpt = safe_load(path, 'cpu', allow_unsafe=allow_unsafe)
    except TorchScriptArchiveError:
        # OpenAI's released .pt files are TorchScript archives. torch.jit
        # reads them with its C++ unpickler, which builds tensors and
        # TorchScript types only (no Python object, no __reduce__); their
        # code is compiled, never run: only state_dict() is read.
        with warnings.catch_warnings():  # torch.jit is deprecated
            warnings.simplefilter('ignore', DeprecationWarning)
            return torch.jit.load(path, map_location='cpu').state_dict()
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        return ckpt['state_dict']
    return ckpt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='open_clip / OpenAI / EVA-CLIP weights')
    parser.add_argument('dst', help="output checkpoint (mmvfm's CLIP)")
    parser.add_argument(
        '--drop-head-bias',
        action='store_true',
        help='EVA-CLIP: drop a non-zero visual.head.bias (image_proj has '
        'no bias)',
    )
    parser.add_argument(
        '-v', '--verbose', action='store_true', help='print every key pair'
    )
    add_unsafe_load_argument(parser)
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        raise SystemExit(f'error: checkpoint "{args.src}" does not exist')
    try:
        out, info = convert_verbose(
            _load(args.src, args.unsafe_load), args.drop_head_bias
        )
    except KeyError as e:
        raise SystemExit(f'error: {e.args[0]}') from None
    except (CheckpointError, OSError) as e:
        raise SystemExit(f'error: {e}') from None
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    meta = dict(
        converted_from=args.src,
        layout=info['layout'],
        arch=info['arch'],
        dropped=info['dropped'],
        notes=info['notes'],
    )
    torch.save({'state_dict': out, 'meta': meta}, args.dst)
    groups = {}
    for key in out:
        group = key.split('.')[0]
        groups[group] = groups.get(group, 0) + 1
    print(
        f'wrote {len(out)} tensors ({info["layout"]} layout) to {args.dst}: '
        + ', '.join(f'{g}.* {n}' for g, n in groups.items())
    )
    if args.verbose:
        for src, dst in info['mapped']:
            print(f'  {src} -> {dst}')
    print(f'dropped: {info["dropped"] or "nothing"}')
    for part, values in info['arch'].items():
        print(f'{part}: {values}')
    for note in info['notes']:
        warn = note.startswith(('activation', 'tokenizer'))
        print(f'{"WARNING" if warn else "NOTE"}: {note}')


if __name__ == '__main__':
    sys.exit(main())
