# Copyright (c) mmvfm contributors. All rights reserved.
"""Key checks for ``init_cfg=dict(type='Pretrained', ...)``.

mmengine's ``Pretrained`` init loads with ``strict=False`` and only logs
the keys that do not match, so a wrong ``prefix`` or a checkpoint of
another architecture trains from scratch without a word.
:func:`check_pretrained_keys` compares a module's keys with the
checkpoint's (after the prefix) and raises naming the first missing and
unexpected ones; :class:`~mmvfm.models.MultiTaskModel` runs it for every
submodule with a ``Pretrained`` init before loading.

``allow_missing`` / ``allow_unexpected`` are regexes (``re.search``) of
keys that may differ, e.g. the ``lora_*`` parameters that a LoRA-adapted
backbone has and its base checkpoint has not (allowed by default).
"""

import re
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch.nn as nn

SHOW = 5
ALLOW_MISSING = (r'\.lora_[AB]$',)


def pretrained_inits(
    module: nn.Module,
) -> Iterator[Tuple[str, nn.Module, Dict]]:
    """``(name, submodule, init_cfg)`` of every ``Pretrained`` init_cfg in
    ``module`` (dict or list form)."""
    for name, sub in module.named_modules():
        cfgs = getattr(sub, 'init_cfg', None)
        for cfg in [cfgs] if isinstance(cfgs, dict) else cfgs or []:
            if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
                yield name, sub, cfg


def check_pretrained_keys(
    module: nn.Module,
    checkpoint: str,
    prefix: Optional[str] = None,
    map_location: str = 'cpu',
    allow_missing: Sequence[str] = ALLOW_MISSING,
    allow_unexpected: Sequence[str] = (),
    where: str = '',
) -> None:
    """ValueError naming the first missing and unexpected keys when the
    checkpoint (its ``prefix.`` keys) does not match ``module``.

    Args:
        where (str): the module's name in the model, for the message.
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    ckpt = _load_checkpoint(checkpoint, map_location)
    state = ckpt.get('state_dict', ckpt)
    if prefix:
        full = prefix if prefix.endswith('.') else prefix + '.'
        heads = sorted({k.split('.', 1)[0] + '.' for k in state})
        state = {
            k[len(full) :]: v for k, v in state.items() if k.startswith(full)
        }
        if not state:
            raise ValueError(
                f'{where or type(module).__name__}.init_cfg: no key of the '
                f'Pretrained checkpoint {checkpoint} starts with prefix '
                f'{prefix!r}; its keys start with {heads[:SHOW]}'
            )
    keys = {
        k[len('module.') :] if k.startswith('module.') else k for k in state
    }
    own = set(module.state_dict())
    allowed_m = [re.compile(p) for p in allow_missing]
    allowed_u = [re.compile(p) for p in allow_unexpected]
    missing = sorted(
        k for k in own - keys if not any(r.search(k) for r in allowed_m)
    )
    unexpected = sorted(
        k for k in keys - own if not any(r.search(k) for r in allowed_u)
    )
    if missing or unexpected:
        src = checkpoint + (f' (prefix {prefix!r})' if prefix else '')
        raise ValueError(
            f'{where or type(module).__name__}.init_cfg: the Pretrained '
            f'checkpoint {src} does not match {type(module).__name__}: '
            f'{len(missing)} missing keys {missing[:SHOW]}, '
            f'{len(unexpected)} unexpected keys {unexpected[:SHOW]} (a wrong '
            'prefix or another architecture?)'
        )
