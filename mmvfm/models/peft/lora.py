# Copyright (c) mmvfm contributors. All rights reserved.
"""LoRA on any backbone by regex: :func:`apply_lora` and the config
builder ``dict(type='LoRA', module=..., targets=[...])``.

``targets`` is a list of dicts, each ``pattern`` (a regex that must match
the *whole* module name, e.g. ``r'layers\\.\\d+\\.attn\\.qkv'``) and any of
``rank``, ``alpha``, ``dropout``, ``parts`` (see
:class:`~mmvfm.models.peft.LoRALinear`) overriding the defaults. Every
``nn.Linear`` whose name matches gets an adapter in place: parameter names
stay (``...qkv.weight``) and ``...qkv.lora_A`` / ``lora_B`` are added, so
pretrained checkpoints of the plain backbone load as they are.

Refused, with an error naming the module: layers whose parent attention
reads their weight directly (``F.linear(x, self.qkv.weight, ...)``) and
would skip the adapter silently -- mmpretrain's ``BEiTAttention`` (BEiT,
BEiT v2, ...), ``WindowMSAV2`` (Swin v2) and
``CrossMultiheadAttention``; and patterns that match no linear layer.

The builder returns the adapted module itself (not a wrapper), so the
backbone keeps its class, attributes and checkpoint keys. Which parameters
train is decided in one place, the model's freezing, e.g.
``MultiTaskModel(freeze=dict(backbone=True, trainable=[r'\\.lora_']))``.
"""

import re
from typing import Dict, Iterator, List, Sequence, Tuple

import torch.nn as nn
from mmdet.registry import MODELS

from .lora_linear import LoRALinear

# parent module class -> its child linears that it reads by `.weight`
READS_WEIGHT_DIRECTLY: Dict[str, Tuple[str, ...]] = {
    'BEiTAttention': ('qkv',),
    'WindowMSAV2': ('qkv',),
    'CrossMultiheadAttention': ('q', 'k', 'v'),
}
_TARGET_KEYS = ('pattern', 'rank', 'alpha', 'dropout', 'parts')


def lora_layers(module: nn.Module) -> Iterator[Tuple[str, LoRALinear]]:
    """``(name, layer)`` of every LoRA layer in ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, LoRALinear):
            yield name, m


def apply_lora(
    module: nn.Module,
    targets: Sequence[dict],
    rank: int = 8,
    alpha: float = 1.0,
    dropout: float = 0.0,
    parts=None,
) -> List[str]:
    """Give every matching ``nn.Linear`` of ``module`` a LoRA adapter, in
    place (module docstring).

    Returns:
        list[str]: the names of the adapted layers.

    Raises:
        ValueError: a pattern matches no linear layer, or a target has an
            unknown key.
        TypeError: a matching layer is read by ``.weight`` in its parent
            (the adapter would be skipped), or is adapted already.
    """
    if not targets:
        raise ValueError('LoRA targets: at least one is needed')
    defaults = dict(rank=rank, alpha=alpha, dropout=dropout, parts=parts)
    compiled = []
    for i, target in enumerate(targets):
        unknown = set(target) - set(_TARGET_KEYS)
        if unknown or 'pattern' not in target:
            raise ValueError(
                f'LoRA targets[{i}] = {target}: needs `pattern`, may have '
                f'{_TARGET_KEYS[1:]}; unknown {sorted(unknown)}'
            )
        compiled.append((re.compile(target['pattern']), target))
    linears = [
        (name, m)
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear)
    ]
    matched: Dict[str, List[str]] = {t['pattern']: [] for _, t in compiled}
    adapted = []
    for name, linear in linears:
        hits = [t for r, t in compiled if r.fullmatch(name)]
        if not hits:
            continue
        target = hits[0]  # the first matching target wins
        matched[target['pattern']].append(name)
        parent_name, _, child = name.rpartition('.')
        parent = module.get_submodule(parent_name)
        reads = READS_WEIGHT_DIRECTLY.get(type(parent).__name__, ())
        if child in reads:
            raise TypeError(
                f'LoRA on {name!r}: its parent {type(parent).__name__} reads '
                f'`{child}.weight` directly (F.linear), so an adapter would '
                'be skipped silently; LoRA is not supported there'
            )
        kwargs = {
            **defaults,
            **{k: v for k, v in target.items() if k != 'pattern'},
        }
        setattr(parent, child, LoRALinear.from_linear(linear, **kwargs))
        adapted.append(name)
    empty = [p for p, names in matched.items() if not names]
    if empty:
        some = ', '.join(n for n, _ in linears[:8])
        raise ValueError(
            f'LoRA targets {empty} match no linear layer (full-name regex '
            f'match; linear layers are e.g. {some})'
        )
    return adapted


def merge_lora(module: nn.Module, unload: bool = False) -> int:
    """Merge every LoRA layer of ``module``; returns how many.

    Args:
        unload: also replace each merged layer by a plain ``nn.Linear``
            sharing its (merged) weight and bias: no LoRA module, parameter
            or branch is left (inference, export); not reversible.
    """
    layers = list(lora_layers(module))
    for name, m in layers:
        m.merge()
        if unload:
            linear = nn.Linear(
                m.in_features,
                m.out_features,
                m.bias is not None,
                device='meta',
            )
            linear.weight, linear.bias = m.weight, m.bias
            linear.train(m.training)
            parent_name, _, child = name.rpartition('.')
            setattr(module.get_submodule(parent_name), child, linear)
    return len(layers)


def unmerge_lora(module: nn.Module) -> int:
    """Unmerge every LoRA layer of ``module``; returns how many."""
    layers = [m for _, m in lora_layers(module)]
    for m in layers:
        m.unmerge()
    return len(layers)


def set_lora_enabled(module: nn.Module, enabled: bool) -> int:
    """Switch every LoRA adapter of ``module`` on or off (e.g. the base
    backbone vs the tuned one); returns how many."""
    layers = [m for _, m in lora_layers(module)]
    for m in layers:
        m.set_enabled(enabled)
    return len(layers)


@MODELS.register_module(name='LoRA')
def build_lora(
    module: dict,
    targets: Sequence[dict],
    rank: int = 8,
    alpha: float = 1.0,
    dropout: float = 0.0,
    parts=None,
) -> nn.Module:
    """Config builder: ``module`` built, then :func:`apply_lora`; returns
    the module itself (its class, attributes and keys unchanged but for the
    added ``lora_*`` parameters).

    Example (ViSFT: q and v of every block's fused qkv, rank 64, alpha 1)::

        backbone=dict(
            type='LoRA',
            module=dict(type='mmpretrain.VisionTransformer', arch='b'),
            targets=[dict(pattern=r'layers\\.\\d+\\.attn\\.qkv',
                          parts=[True, False, True])],
            rank=64, alpha=1)
    """
    built = MODELS.build(module)
    apply_lora(built, targets, rank, alpha, dropout, parts)
    return built
