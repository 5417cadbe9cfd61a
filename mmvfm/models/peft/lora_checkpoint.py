# Copyright (c) mmvfm contributors. All rights reserved.
"""LoRA checkpoints: release files, merged exports, ViSFT's layout.

Three kinds of file, chosen deliberately:

- **full state** (resume): mmengine's own checkpoint of the whole model,
  ``lora_*`` parameters included; nothing special here;
- **LoRA-only release** (:func:`save_lora` / :func:`load_lora`): the
  adapters alone plus, per adapted layer, its ``rank``, ``alpha``,
  ``parts`` and shape, so that loading into a model adapted differently
  fails naming the key instead of loading wrong weights;
- **merged export** (:func:`merged_state_dict`): the backbone with
  ``s B A`` added into each adapted weight and no ``lora_*`` key -- a plain
  checkpoint of the un-adapted backbone class.

ViSFT's released adapters (TencentARC/ViSFT, loralib's ``MergedLinear`` on
EVA-CLIP's ``visual.blocks.{i}.attn.qkv``) carry the same ``lora_A`` /
``lora_B`` tensors as :class:`~mmvfm.models.peft.LoRALinear` (loralib's
stacked shapes); :func:`rename_keys` maps the block names both ways
(:data:`VISFT_TO_MMPRETRAIN`, :data:`MMPRETRAIN_TO_VISFT`). Such a file
carries no rank or alpha: :func:`load_lora` then checks the shapes against
the model, whose own ``rank`` / ``alpha`` / ``parts`` must be ViSFT's
(rank 64, alpha 1, q and v).
"""

import copy
import re
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmvfm.fileio import safe_load

from .lora import lora_layers

LORA_FORMAT = 'mmvfm-lora/1'
# (regex, replacement) pairs for rename_keys
VISFT_TO_MMPRETRAIN: List[Tuple[str, str]] = [
    (r'^visual\.blocks\.(\d+)\.attn\.qkv\.', r'layers.\1.attn.qkv.')
]
MMPRETRAIN_TO_VISFT: List[Tuple[str, str]] = [
    (r'^layers\.(\d+)\.attn\.qkv\.', r'visual.blocks.\1.attn.qkv.')
]
StateDict = Dict[str, torch.Tensor]


def _layer_meta(layer) -> dict:
    return dict(
        rank=layer.rank,
        alpha=layer.alpha,
        parts=list(layer.parts),
        in_features=layer.in_features,
        out_features=layer.out_features,
    )


def lora_state(model: nn.Module) -> dict:
    """The adapters of ``model`` as a release:
    ``dict(meta=dict(format, layers={name: rank/alpha/parts/shape}),
    state_dict={'<name>.lora_A': ..., '<name>.lora_B': ...})``."""
    layers, state = {}, {}
    for name, layer in lora_layers(model):
        if layer.merged:
            raise RuntimeError(
                f'LoRA layer {name!r} is merged: unmerge() before saving '
                'the adapters alone'
            )
        layers[name] = _layer_meta(layer)
        state[f'{name}.lora_A'] = layer.lora_A.detach().clone()
        state[f'{name}.lora_B'] = layer.lora_B.detach().clone()
    if not layers:
        raise ValueError('the model has no LoRA layer')
    return dict(meta=dict(format=LORA_FORMAT, layers=layers), state_dict=state)


def save_lora(model: nn.Module, path: str) -> None:
    """Write :func:`lora_state` to ``path`` (``torch.save``)."""
    torch.save(lora_state(model), path)


def load_lora(
    model: nn.Module,
    release: Union[str, dict],
    strict: bool = True,
) -> List[str]:
    """Load adapters into ``model``'s LoRA layers.

    Args:
        model: a model with LoRA layers (``apply_lora`` / ``type='LoRA'``).
        release: a path or a dict: a :func:`lora_state` release (with
            ``meta``), or a bare ``{'<layer>.lora_A': ..., ...}`` state dict
            (e.g. ViSFT's after :func:`rename_keys`), checked by shape only.
        strict: every LoRA layer of the model must be in the release.

    Returns:
        list[str]: the names of the loaded layers.

    Raises:
        KeyError / ValueError naming the key: a layer of the release that
        the model lacks, a rank / alpha / parts / shape that differs, a
        layer of the model that the release lacks (``strict``).
    """
    if isinstance(release, str):
        release = safe_load(release, 'cpu')
    meta = release.get('meta') if 'state_dict' in release else None
    state = release['state_dict'] if meta is not None else release
    if meta is not None and meta.get('format') != LORA_FORMAT:
        raise ValueError(
            f'not an mmvfm LoRA release: format {meta.get("format")!r} '
            f'(expected {LORA_FORMAT!r})'
        )
    layers = dict(lora_layers(model))
    names = sorted({k.rsplit('.', 1)[0] for k in state})
    for key in state:
        if not key.endswith(('.lora_A', '.lora_B')):
            raise KeyError(f'{key}: not a LoRA key (lora_A / lora_B)')
    for name in names:
        if name not in layers:
            raise KeyError(
                f'{name}.lora_A: the model has no LoRA layer {name!r} (its '
                f'LoRA layers: {sorted(layers)[:6]}...)'
            )
        layer = layers[name]
        if meta is not None:
            saved = meta['layers'].get(name)
            if saved is None:
                raise KeyError(f'{name}: in the state dict but not in meta')
            mine = _layer_meta(layer)
            for field in (
                'rank',
                'alpha',
                'parts',
                'in_features',
                'out_features',
            ):
                if saved[field] != mine[field]:
                    raise ValueError(
                        f'{name}.lora_A: the release has {field}='
                        f'{saved[field]!r}, the model {field}='
                        f'{mine[field]!r}'
                    )
        for part in ('lora_A', 'lora_B'):
            key = f'{name}.{part}'
            if key not in state:
                raise KeyError(f'{key}: missing from the release')
            mine = getattr(layer, part)
            if state[key].shape != mine.shape:
                raise ValueError(
                    f'{key}: shape {tuple(state[key].shape)} in the release, '
                    f'{tuple(mine.shape)} in the model (rank {layer.rank}, '
                    f'parts {layer.parts})'
                )
    missing = sorted(set(layers) - set(names))
    if strict and missing:
        raise KeyError(
            f'{missing[0]}.lora_A: the release has no adapter for '
            f'{len(missing)} LoRA layer(s) of the model: {missing[:6]}'
        )
    with torch.no_grad():
        for name in names:
            layer = layers[name]
            if layer.merged:
                raise RuntimeError(
                    f'LoRA layer {name!r} is merged: unmerge() before loading'
                )
            layer.lora_A.copy_(state[f'{name}.lora_A'])
            layer.lora_B.copy_(state[f'{name}.lora_B'])
    return names


def merged_state_dict(model: nn.Module) -> StateDict:
    """``model``'s state dict with every adapter merged into its weight and
    no ``lora_*`` key: a plain checkpoint of the un-adapted model (``model``
    itself is not changed)."""
    merged = copy.deepcopy(model)
    for _, layer in lora_layers(merged):
        if not layer.merged:
            layer.merge()
    return {
        k: v
        for k, v in merged.state_dict().items()
        if not re.search(r'\.lora_[AB]$', k)
    }


def rename_keys(
    state_dict: StateDict, rules: Sequence[Tuple[str, str]]
) -> StateDict:
    """Keys renamed by the first matching ``(regex, replacement)`` rule;
    every key must match one (ValueError naming the first that does not).
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ValueError(
                f'{key}: matches no renaming rule {[p for p, _ in rules]}'
            )
    return out
