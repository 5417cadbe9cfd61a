# Copyright (c) mmvfm contributors. All rights reserved.
"""Record the outputs of sub-modules, addressed by dotted path, with hooks.

A source is ``'<dotted.module.path>'`` or ``'<dotted.module.path>[k]'``;
the second form takes element ``k`` of a tuple/list output (e.g.
``'neck[2]'``: the third FPN level). This is *what to record*; which loss
to compute on it is configured elsewhere.
"""

import difflib
import re
from typing import Any, Dict, Optional, Tuple

import torch.nn as nn

_SOURCE = re.compile(r'^(?P<path>[A-Za-z0-9_.]+?)(?:\[(?P<index>-?\d+)\])?$')


def parse_source(source: str) -> Tuple[str, Optional[int]]:
    """``'neck[2]'`` -> ``('neck', 2)``; ``'neck.fpn_convs.2.conv'`` ->
    ``('neck.fpn_convs.2.conv', None)``.

    Raises:
        ValueError: for a malformed source.
    """
    match = _SOURCE.match(source) if isinstance(source, str) else None
    if match is None:
        raise ValueError(
            f'bad recorder source {source!r}: expected a dotted module '
            "path such as 'neck.fpn_convs.2.conv', optionally with an "
            "output index such as 'neck[2]'"
        )
    index = match.group('index')
    return match.group('path'), None if index is None else int(index)


def find_module(model: nn.Module, path: str, what: str) -> nn.Module:
    """The sub-module at ``path``, or a KeyError naming it and the closest
    existing paths."""
    modules = dict(model.named_modules())
    if path not in modules:
        close = difflib.get_close_matches(path, list(modules), n=3)
        hint = f'; did you mean {close}?' if close else ''
        raise KeyError(f'{what}: module {path!r} not found{hint}')
    return modules[path]


def num_outputs(module: nn.Module) -> Optional[int]:
    """How many maps a multi-output module returns, when it says so
    (mmdet necks: ``num_outs``; backbones: ``out_indices``)."""
    if hasattr(module, 'num_outs'):
        return int(module.num_outs)
    if hasattr(module, 'out_indices'):
        return len(module.out_indices)
    return None


class ModuleOutputsRecorder:
    """Records the output of one sub-module of ``model`` on each forward.

    Args:
        model (nn.Module): the model holding the module.
        source (str): ``'path'`` or ``'path[k]'`` (see module docstring).
        what (str): a name for error messages, e.g.
            ``'recorders.fpn_0.student'``.
    """

    def __init__(self, model: nn.Module, source: str, what: str) -> None:
        self.source = source
        self.what = what
        self.path, self.index = parse_source(source)
        self.module = find_module(model, self.path, what)
        count = num_outputs(self.module)
        if (
            self.index is not None
            and count is not None
            and not (-count <= self.index < count)
        ):
            raise IndexError(
                f'{what}: {source!r} asks for output {self.index} of '
                f'{self.path!r}, which has {count} outputs'
            )
        self.data: Any = None
        self._handle = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.index is None:
            self.data = output
            return
        if not isinstance(output, (tuple, list)):
            raise TypeError(
                f'{self.what}: {self.source!r} indexes the output of '
                f'{self.path!r}, which is a {type(output).__name__}, '
                'not a tuple'
            )
        if not -len(output) <= self.index < len(output):
            raise IndexError(
                f'{self.what}: {self.source!r} asks for output '
                f'{self.index} of {self.path!r}, which returned '
                f'{len(output)}'
            )
        self.data = output[self.index]

    def reset(self) -> None:
        self.data = None

    def get(self) -> Any:
        """The recorded output; an error if the module did not run."""
        if self.data is None:
            raise RuntimeError(
                f'{self.what}: nothing recorded from {self.source!r}: the '
                'module did not run in this forward'
            )
        return self.data

    def remove(self) -> None:
        self._handle.remove()


def build_recorders(
    model: nn.Module, sources: Dict[str, str], what: str
) -> Dict[str, ModuleOutputsRecorder]:
    """One recorder per ``name: source`` entry."""
    return {
        name: ModuleOutputsRecorder(model, source, f'{what}.{name}')
        for name, source in sources.items()
    }
