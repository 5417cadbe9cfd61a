# Copyright (c) mmvfm contributors. All rights reserved.
"""Convert EVA-CLIP's vision tower (EVA01-CLIP ``visual.*`` keys, as used by
ViSFT) into mmpretrain's ``VisionTransformer`` layout (``arch='eva-g'`` and
the like), for ``init_cfg=dict(type='Pretrained', checkpoint=OUT)``.

Mapping (``visual.`` stripped; ``i`` the block), EVA-CLIP -> mmpretrain:

- ``cls_token``, ``pos_embed`` -> the same;
- ``patch_embed.proj`` -> ``patch_embed.projection``;
- ``blocks.i.norm1`` / ``norm2`` -> ``layers.i.ln1`` / ``ln2``;
- ``blocks.i.attn.qkv.weight`` -> ``layers.i.attn.qkv.weight``;
- ``blocks.i.attn.q_bias``, ``v_bias`` -> ``layers.i.attn.qkv.bias`` =
  [q, 0, v];
- ``blocks.i.attn.proj`` -> ``layers.i.attn.proj``;
- ``blocks.i.mlp.fc1`` / ``fc2`` -> ``layers.i.ffn.layers.0.0`` /
  ``layers.i.ffn.layers.1``;
- ``blocks.i.gamma_1`` / ``gamma_2`` -> ``layers.i.attn.gamma1.weight`` /
  ``layers.i.ffn.gamma2.weight``;
- ``norm`` -> ``ln1`` (the final norm).

EVA-CLIP has no key bias: its place in ``qkv.bias`` is zero (mmpretrain's
layer then trains it like any bias; freeze it if that matters). The CLIP
projection ``head`` (and a ``fc_norm``) are not part of the backbone and
are written to ``--head-out`` if given, else dropped with a note. EVA02's
SwiGLU MLP, sub-LN and RoPE have no counterpart in mmpretrain's ViT and
are refused with the offending key.

    python tools/model_converters/eva_clip_to_mmpretrain.py \\
        EVA01_CLIP_g_14_psz14_s11B.pt eva-g-14_mmpretrain.pth
"""

import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, Tuple

import torch

# run from a checkout: mmvfm importable without an install
sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmvfm.fileio.cli import (  # noqa: E402
    add_unsafe_load_argument,
    load_or_exit,
)

RULES = [
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.projection.\1'),
    (r'^blocks\.(\d+)\.norm1\.(weight|bias)$', r'layers.\1.ln1.\2'),
    (r'^blocks\.(\d+)\.norm2\.(weight|bias)$', r'layers.\1.ln2.\2'),
    (r'^blocks\.(\d+)\.attn\.qkv\.weight$', r'layers.\1.attn.qkv.weight'),
    (
        r'^blocks\.(\d+)\.attn\.proj\.(weight|bias)$',
        r'layers.\1.attn.proj.\2',
    ),
    (
        r'^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$',
        r'layers.\1.ffn.layers.0.0.\2',
    ),
    (
        r'^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$',
        r'layers.\1.ffn.layers.1.\2',
    ),
    (r'^blocks\.(\d+)\.gamma_1$', r'layers.\1.attn.gamma1.weight'),
    (r'^blocks\.(\d+)\.gamma_2$', r'layers.\1.ffn.gamma2.weight'),
    (r'^norm\.(weight|bias)$', r'ln1.\1'),
]
HEAD = re.compile(r'^(head|fc_norm)\.')
QV_BIAS = re.compile(r'^blocks\.(\d+)\.attn\.(q_bias|v_bias)$')
IGNORED = re.compile(r'^blocks\.\d+\.attn\.relative_position_index$')


def convert(
    state_dict: Dict[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """EVA-CLIP vision state dict (with or without ``visual.``) ->
    (mmpretrain ViT state dict, CLIP head tensors).

    Raises:
        KeyError: a key without a counterpart (named), or a block with a
            ``q_bias`` but no ``v_bias`` (or the reverse).
    """
    visual = {
        k[len('visual.') :]: v
        for k, v in state_dict.items()
        if k.startswith('visual.')
    }
    if not visual:  # a vision-only file
        visual = dict(state_dict)
    out, head, biases = {}, {}, {}
    for key, value in visual.items():
        if HEAD.match(key):
            head[key] = value
            continue
        if IGNORED.match(key):
            continue
        m = QV_BIAS.match(key)
        if m:
            biases.setdefault(int(m.group(1)), {})[m.group(2)] = value
            continue
        for pattern, repl in RULES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(
                f"visual.{key}: no counterpart in mmpretrain's "
                'VisionTransformer (EVA02 SwiGLU / sub-LN / RoPE are not '
                'supported)'
            )
    for block, qv in sorted(biases.items()):
        if set(qv) != {'q_bias', 'v_bias'}:
            raise KeyError(
                f'visual.blocks.{block}.attn: has {sorted(qv)}, needs both '
                'q_bias and v_bias'
            )
        q, v = qv['q_bias'], qv['v_bias']
        out[f'layers.{block}.attn.qkv.bias'] = torch.cat(
            [q, torch.zeros_like(q), v]
        )
    return out, head


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='EVA-CLIP checkpoint (.pt / .pth)')
    parser.add_argument('dst', help='output mmpretrain checkpoint')
    parser.add_argument('--head-out', help='also save the CLIP head here')
    add_unsafe_load_argument(parser)
    args = parser.parse_args(argv)
    ckpt = load_or_exit(args.src, args.unsafe_load)
    state = ckpt.get('state_dict', ckpt.get('module', ckpt))
    try:
        out, head = convert(state)
    except KeyError as e:
        raise SystemExit(f'error: {e.args[0]}') from None
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(
        {'state_dict': out, 'meta': {'converted_from': args.src}}, args.dst
    )
    print(f'wrote {len(out)} tensors to {args.dst}')
    if head:
        if args.head_out:
            torch.save(head, args.head_out)
            print(f'wrote the CLIP head ({sorted(head)}) to {args.head_out}')
        else:
            print(
                f'dropped the CLIP head {sorted(head)} (--head-out keeps it)'
            )


if __name__ == '__main__':
    sys.exit(main())
