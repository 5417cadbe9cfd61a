# Copyright (c) mmvfm contributors. All rights reserved.
"""Log how far each optimizer step moves the parameters: the update RMS
divided by the learning rate, per param group or per named parameter set.

For AdamW a parameter's update RMS / lr is about 1 early on and below 1 once
the moments average over noisy gradients; an optimizer that steps several
times larger than AdamW at the same lr (MT-AdamW's ``1/s_k`` on parameters
that only one task touches, ``untouched='skip'``) shows as a value several
times larger. The value is independent of the lr schedule, so runs with
different lrs compare directly.
"""

import math
import re
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict

__all__ = ['UpdateSizeHook']


@HOOKS.register_module()
class UpdateSizeHook(Hook):
    r"""Logs ``train/update_rms/<set>``: for the parameters of a set that
    moved in the step,

    .. math::

        \sqrt{\frac{1}{N} \sum_{p} \sum_{i} (\Delta p_i / \alpha_p)^2}

    over their :math:`N` elements, :math:`\Delta p` the change of the step
    (weight decay included) and :math:`\alpha_p` the lr of the parameter's
    group in that step. Any optimizer, any optim wrapper (a dict of them
    too).

    A parameter *moved* if any element changed. Parameters without a
    gradient in a step (another task's head) do not move and are left out
    of that step's value, so a task-only set reports the size of the steps
    it takes; a step in which nothing of a set moved logs nothing for it.
    The values go to the message hub like a loss, so the ``LoggerHook``
    prints them averaged over its window and writes them to the visualizer
    backends (``scalars.json``).

    Args:
        sets (dict[str, str], optional): set name -> regex, ``re.search``
            on the parameter names of the unwrapped model (e.g.
            ``dict(proposer=r'^proposer\.', decoder=r'^decoder\.',
            text=r'^text_(encoder|proj)\.')``). A parameter may be in several
            sets; a regex that matches no trainable parameter is an error at
            the start. Default: one set per param group, ``group<i>`` (with
            several optimizers ``<optimizer key>.group<i>``).
        interval (int): measure every ``interval`` iterations (default 1:
            every step). Each measured step copies the measured parameters
            once.

    Config::

        custom_hooks = [dict(type='UpdateSizeHook',
                             sets=dict(decoder=r'^decoder\.'))]
    """

    priority = 'NORMAL'

    def __init__(
        self, sets: Optional[Dict[str, str]] = None, interval: int = 1
    ) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(
                'UpdateSizeHook: interval must be an int >= 1, got '
                f'{interval!r}'
            )
        if sets is not None:
            if not isinstance(sets, dict) or not sets:
                raise ValueError(
                    'UpdateSizeHook: sets must be a non-empty dict of name -> '
                    f'regex, got {sets!r}'
                )
            for name, pattern in sets.items():
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as e:
                    raise ValueError(
                        f'UpdateSizeHook: sets.{name} is not a regex '
                        f'({pattern!r}): {e}'
                    ) from None
        self.sets_cfg = sets
        self.interval = interval
        # set name -> [(parameter, its optimizer group)]
        self._sets: Dict[str, List[Tuple[torch.Tensor, dict]]] = {}
        self._before: Optional[Dict[int, Tuple[torch.Tensor, float]]] = None

    def before_train(self, runner) -> None:
        model = (
            runner.model.module
            if is_model_wrapper(runner.model)
            else (runner.model)
        )
        group_of: Dict[int, dict] = {}
        by_group: Dict[str, List[Tuple[torch.Tensor, dict]]] = {}
        optimizers = (
            list(runner.optim_wrapper.items())
            if isinstance(runner.optim_wrapper, OptimWrapperDict)
            else [(None, runner.optim_wrapper)]
        )
        for key, wrapper in optimizers:
            for i, group in enumerate(wrapper.optimizer.param_groups):
                name = f'group{i}' if key is None else f'{key}.group{i}'
                by_group[name] = [(p, group) for p in group['params']]
                for p in group['params']:
                    group_of[id(p)] = group
        if self.sets_cfg is None:
            self._sets = by_group
            return
        self._sets = {}
        for name, pattern in self.sets_cfg.items():
            regex = re.compile(pattern)
            members = [
                (p, group_of[id(p)])
                for pname, p in model.named_parameters()
                if id(p) in group_of and regex.search(pname)
            ]
            if not members:
                raise ValueError(
                    f'UpdateSizeHook: sets.{name} ({pattern!r}) matches no '
                    'parameter that the optimizer updates'
                )
            self._sets[name] = members

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._before = None
        if not self.every_n_train_iters(runner, self.interval):
            return
        before = {}
        for members in self._sets.values():
            for p, group in members:
                if id(p) not in before:
                    # the lr of this step (schedulers change it afterwards)
                    before[id(p)] = (p.detach().clone(), float(group['lr']))
        self._before = before

    @torch.no_grad()
    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        if self._before is None:
            return
        for name, value in self.measure().items():
            runner.message_hub.update_scalar(f'train/update_rms/{name}', value)
        self._before = None

    @torch.no_grad()
    def measure(self) -> Dict[str, float]:
        """Each set's update RMS / lr since :meth:`before_train_iter` (sets
        in which nothing moved are left out)."""
        values = {}
        for name, members in self._sets.items():
            total, count = 0.0, 0
            for p, _ in members:
                old, lr = self._before[id(p)]
                delta = p.detach() - old
                if lr <= 0 or not bool(delta.ne(0).any()):
                    continue
                total += float(delta.double().div(lr).pow(2).sum())
                count += delta.numel()
            if count:
                values[name] = math.sqrt(total / count)
        return values
