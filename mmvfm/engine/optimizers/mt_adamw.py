# Copyright (c) mmvfm contributors. All rights reserved.
r"""MT-AdamW: Uni-Perceiver v2's task-balanced gradient normalisation
("TBGN") in AdamW, and the optim wrapper that clips after it.

Uni-Perceiver v2 (Li et al., 2022, arXiv:2211.09808, Sec. 4.3) trains one
task per iteration (all ranks the same task: ``strategy='unmixed'`` of
:class:`~mmvfm.engine.runner.MultiTaskIterBasedTrainLoop`). For a step on
task :math:`k`, drawn with ratio :math:`s_k`, with task weight
:math:`\omega_k` (default 1):

.. math::

    g &= \omega_k \nabla L_k / \lVert \nabla L_k \rVert_2 \\
    m &\leftarrow (1 - \beta_1)\, m + (\beta_1 / s_k)\, g \\
    n &\leftarrow (1 - \beta_2)\, n + (\beta_2 / s_k)\, g^2 \\
    \theta &\leftarrow \theta - \alpha \lambda \theta
        - \alpha\, m / (\sqrt{n} + \epsilon)

- :math:`\lVert \nabla L_k \rVert_2` is the global L2 norm over every
  parameter of the optimizer (all param groups) that has a gradient in
  this step (``p.grad is not None``); under DDP it is the norm of the
  rank-averaged gradient, the same on every rank.
- :math:`\beta` follows the paper: it weights the NEW gradient, so the
  defaults ``betas=(0.1, 0.001)`` are AdamW's ``(0.9, 0.999)``. A moment
  must not grow faster than it forgets: :math:`\beta / s_k > 1` is refused
  when the optimizer is built (every param group, every task).
- ``task_ratios`` are normalised to sum to 1, as the loop's
  :class:`~mmvfm.engine.runner.TaskSampler` does, so the same dict as
  ``train_cfg.task_ratios`` gives the loop's probabilities.

Where the paper is silent, we chose:

- Weight decay is decoupled, as in AdamW (applied before the moment
  update, ``p *= 1 - lr * weight_decay``), and only to parameters that have
  a gradient in this step.
- Parameters without a gradient in a step (``p.grad is None``: another
  task's head) follow ``untouched``. With ``'skip'`` (the default) they are
  left as they are: value, moments and step count. Then a parameter that
  only task :math:`k` touches sees its moments decay only on task
  :math:`k`'s steps and settles at :math:`m = \hat g / s_k`,
  :math:`n = \hat g^2 / s_k`: its update is :math:`1/\sqrt{s_k}` times
  AdamW's (2.24x at :math:`s_k = 0.2`), bias correction or not. With
  ``'decay'`` its value stays (no update, no weight decay) but its moments
  decay as for a zero gradient, :math:`m \leftarrow (1 - \beta_1) m`,
  :math:`n \leftarrow (1 - \beta_2) n`, and its step count advances, so
  that bias correction counts every step its moments decayed (a frozen
  count would leave the corrected :math:`n \approx \hat g^2 / s_k` early
  on: updates :math:`\sqrt{s_k}` of AdamW's). The moments then average
  over all steps, the :math:`1/s_k` of the update balancing the steps
  without a gradient, as the paper's derivation assumes. A parameter that
  never had a gradient has no state and nothing to decay in either mode.
  A zero tensor gradient is a gradient (moments decay, weight decay
  applies).
- Bias correction is off (the paper's equations). With
  ``bias_correction=True``, :math:`m / (1 - (1 - \beta_1)^t)` and
  :math:`n / (1 - (1 - \beta_2)^t)` replace :math:`m` and :math:`n` in
  the update, :math:`t` being the number of steps this parameter has taken
  (it had a gradient; the count is saved in the state as ``'step'``). It
  corrects the zero start of the moments only, not the :math:`1/s_k`
  scaling.
- A zero global norm (nothing to normalise) skips the step of that task:
  no parameter, moment or step count changes.
- Gradient clipping (``optim_wrapper.clip_grad``) must act on the
  normalised gradient :math:`g`. mmengine's ``OptimWrapper.step`` clips,
  then calls ``optimizer.step()``, so the normalisation has to come first:
  :class:`MTAdamWOptimWrapper` calls :meth:`MTAdamW.normalize_grads` (the
  one place of the normalisation; it scales ``p.grad`` in place) before
  the clipping, and ``step()`` then uses the gradients as they are. With
  any other wrapper ``step()`` normalises itself; a plain ``OptimWrapper``
  with ``clip_grad`` would clip before normalising, and
  :class:`~mmvfm.engine.hooks.TaskAwareOptimizerHook` refuses it.
- The task of a step is set by
  :class:`~mmvfm.engine.hooks.TaskAwareOptimizerHook` before each
  iteration (:meth:`MTAdamW.set_task`) and consumed by ``step()``: a step
  without a task is an error. With gradient accumulation the task set last
  is the step's task (accumulating over different tasks is not TBGN).

Config::

    optim_wrapper = dict(
        type='MTAdamWOptimWrapper',
        optimizer=dict(type='MTAdamW', lr=1e-4, weight_decay=0.05,
                       task_ratios=dict(det=0.5, cls=0.5),
                       task_weights=dict(det=1.0, cls=0.5)),
        clip_grad=dict(max_norm=0.5))  # clips the normalised gradient
    custom_hooks = [dict(type='TaskAwareOptimizerHook')]
"""

import math
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
from mmdet.registry import OPTIM_WRAPPERS, OPTIMIZERS
from mmengine.optim import OptimWrapper
from torch.optim import Optimizer

ParamsT = Union[Iterable[torch.Tensor], Iterable[dict]]
UNTOUCHED = ('skip', 'decay')


@OPTIMIZERS.register_module()
class MTAdamW(Optimizer):
    r"""AdamW with task-balanced gradient normalisation (Uni-Perceiver v2).

    See the module documentation for the equations and the choices made
    where the paper is silent.

    Args:
        params (iterable): parameters or param group dicts.
        task_ratios (dict[str, float]): task name -> sampling ratio
            :math:`s_k` (> 0; normalised to sum to 1).
        task_weights (dict[str, float], optional): task name -> weight
            :math:`\omega_k` (> 0); tasks not named get 1.
        lr (float): learning rate :math:`\alpha`.
        betas (tuple[float, float]): :math:`(\beta_1, \beta_2)` in the
            paper's convention (weight of the new gradient), in (0, 1].
        eps (float): :math:`\epsilon`.
        weight_decay (float): decoupled weight decay :math:`\lambda`.
        bias_correction (bool): divide the moments by
            :math:`1 - (1 - \beta)^t` (``t``: this parameter's steps).
        untouched (str): what a step does to a parameter without a
            gradient that has state: ``'skip'`` (nothing) or ``'decay'``
            (its moments decay and its step count advances; its value
            stays). See the module documentation.

    Raises:
        ValueError: a bad hyper-parameter, a task weight of a task without
            a ratio, or :math:`\beta / s_k > 1` for some group and task.
    """

    def __init__(
        self,
        params: ParamsT,
        task_ratios: Dict[str, float],
        task_weights: Optional[Dict[str, float]] = None,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.1, 0.001),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        untouched: str = 'skip',
    ) -> None:
        if untouched not in UNTOUCHED:
            raise ValueError(
                f'MTAdamW.untouched must be one of {UNTOUCHED}, got '
                f'{untouched!r}'
            )
        self.task_ratios = self._check_ratios(task_ratios)
        self.task_weights = self._check_weights(task_weights, task_ratios)
        self._task: Optional[str] = None
        # None: not normalised yet in this step; True: normalised;
        # False: zero norm, the step is skipped
        self._normalized: Optional[bool] = None
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            untouched=untouched,
        )
        super().__init__(params, defaults)

    # ------------------------------------------------------------------
    @staticmethod
    def _check_ratios(task_ratios: Dict[str, float]) -> Dict[str, float]:
        if not isinstance(task_ratios, dict) or not task_ratios:
            raise ValueError(
                'MTAdamW.task_ratios must be a non-empty dict of task name '
                f'-> sampling ratio, got {task_ratios!r}'
            )
        for task, ratio in task_ratios.items():
            if not (isinstance(ratio, (int, float)) and ratio > 0):
                raise ValueError(
                    f'MTAdamW.task_ratios.{task} must be > 0, got {ratio!r}'
                )
        total = float(sum(task_ratios.values()))
        return {t: r / total for t, r in sorted(task_ratios.items())}

    @staticmethod
    def _check_weights(
        task_weights: Optional[Dict[str, float]],
        task_ratios: Dict[str, float],
    ) -> Dict[str, float]:
        task_weights = dict(task_weights or {})
        unknown = sorted(set(task_weights) - set(task_ratios))
        if unknown:
            raise ValueError(
                f'MTAdamW.task_weights names tasks {unknown} that have no '
                f'ratio in task_ratios {sorted(task_ratios)}'
            )
        for task, weight in task_weights.items():
            if not (isinstance(weight, (int, float)) and weight > 0):
                raise ValueError(
                    f'MTAdamW.task_weights.{task} must be > 0, got {weight!r}'
                )
        return {t: float(task_weights.get(t, 1.0)) for t in task_ratios}

    def __setstate__(self, state: dict) -> None:
        # optimizer state saved before ``untouched`` existed: today's default
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault('untouched', 'skip')

    def add_param_group(self, param_group: dict) -> None:
        """Add a group (torch's), then check its hyper-parameters."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key in ('lr', 'eps', 'weight_decay'):
            if not group[key] >= 0:
                raise ValueError(f'MTAdamW: {key} must be >= 0')
        if group['untouched'] not in UNTOUCHED:
            raise ValueError(
                f'MTAdamW: untouched must be one of {UNTOUCHED}, got '
                f'{group["untouched"]!r}'
            )
        if len(group['betas']) != 2:
            raise ValueError('MTAdamW: betas must be (beta1, beta2)')
        for i, beta in enumerate(group['betas'], 1):
            if not 0 < beta <= 1:
                raise ValueError(
                    f'MTAdamW: beta{i} must be in (0, 1] (the weight of the '
                    f'new gradient, paper convention), got {beta}'
                )
            for task, ratio in self.task_ratios.items():
                if beta / ratio > 1:
                    raise ValueError(
                        f'MTAdamW: beta{i}={beta} / ratio {ratio:.6g} of '
                        f'task {task!r} = {beta / ratio:.6g} > 1: the '
                        'moment would weight the new gradient more than it '
                        'keeps; lower beta or raise the ratio'
                    )

    # ------------------------------------------------------------------
    @property
    def current_task(self) -> Optional[str]:
        """The task of the next step (None once a step consumed it)."""
        return self._task

    def set_task(self, task: str) -> None:
        """Set the task whose gradients the next :meth:`step` applies.

        Raises:
            KeyError: ``task`` has no ratio in ``task_ratios``.
        """
        if task not in self.task_ratios:
            raise KeyError(
                f'MTAdamW: task {task!r} has no ratio in task_ratios '
                f'{sorted(self.task_ratios)}'
            )
        self._task = task
        self._normalized = None

    def _require_task(self) -> str:
        if self._task is None:
            raise RuntimeError(
                'MTAdamW: no task set for this step. Call '
                'optimizer.set_task(task) before each step; in a Runner add '
                "custom_hooks=[dict(type='TaskAwareOptimizerHook')] (with a "
                'multi-task train loop)'
            )
        return self._task

    def _grads(self) -> List[torch.Tensor]:
        return [
            p.grad
            for group in self.param_groups
            for p in group['params']
            if p.grad is not None
        ]

    @torch.no_grad()
    def normalize_grads(self) -> float:
        r"""Scale every gradient in place by
        :math:`\omega_k / \lVert \nabla L_k \rVert` (the current task's).

        :class:`MTAdamWOptimWrapper` calls it before clipping; otherwise
        :meth:`step` does. Once per step.

        Returns:
            float: the global norm before scaling (0: the step will be
            skipped and the gradients are left as they are).

        Raises:
            RuntimeError: no task set, or already normalised in this step.
        """
        task = self._require_task()
        if self._normalized is not None:
            raise RuntimeError(
                'MTAdamW: the gradients of this step are already normalised'
            )
        grads = self._grads()
        norm = 0.0
        if grads:
            total = torch.nn.utils.get_total_norm(grads, 2.0)
            if hasattr(total, 'full_tensor'):  # DTensor (FSDP2) gradients
                total = total.full_tensor()
            norm = float(total)
        self._normalized = norm > 0
        if self._normalized:
            scale = self.task_weights[task] / norm
            for grad in grads:
                grad.mul_(scale)
        return norm

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """One MT-AdamW step of the current task (then cleared).

        Args:
            closure (callable, optional): re-evaluates the loss.

        Returns:
            The closure's loss, or None.

        Raises:
            RuntimeError: no task set; a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        task = self._require_task()
        try:
            if self._normalized is None:
                self.normalize_grads()
            if self._normalized:
                self._update(self.task_ratios[task])
        finally:
            self._task = None
            self._normalized = None
        return loss

    def _update(self, ratio: float) -> None:
        """The moment and parameter update with the normalised grads."""
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            lr, eps, wd = group['lr'], group['eps'], group['weight_decay']
            decay = group['untouched'] == 'decay'
            for p in group['params']:
                if p.grad is None:
                    state = self.state.get(p)
                    if decay and state:
                        # a zero gradient's moment update; value unchanged
                        state['step'] += 1
                        state['exp_avg'].mul_(1 - beta1)
                        state['exp_avg_sq'].mul_(1 - beta2)
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError(
                        'MTAdamW does not support sparse gradients'
                    )
                state = self.state[p]
                if not state:
                    state['step'] = 0
                    state['exp_avg'] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                    state['exp_avg_sq'] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                state['step'] += 1
                exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                if wd:
                    p.mul_(1 - lr * wd)
                exp_avg.mul_(1 - beta1).add_(grad, alpha=beta1 / ratio)
                exp_avg_sq.mul_(1 - beta2).addcmul_(
                    grad, grad, value=beta2 / ratio
                )
                step_size = lr
                if group['bias_correction']:
                    t = state['step']
                    step_size = lr / (1 - (1 - beta1) ** t)
                    # sqrt(n / bc2) + eps
                    denom = (
                        exp_avg_sq.sqrt()
                        .div_(math.sqrt(1 - (1 - beta2) ** t))
                        .add_(eps)
                    )
                else:
                    denom = exp_avg_sq.sqrt().add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)


@OPTIM_WRAPPERS.register_module()
class MTAdamWOptimWrapper(OptimWrapper):
    """``OptimWrapper`` for :class:`MTAdamW` that clips the normalised
    gradient: ``step()`` normalises (``optimizer.normalize_grads()``),
    then clips (``clip_grad``, as mmengine's), then steps.

    Args:
        optimizer (MTAdamW): the optimizer.
        **kwargs: as mmengine's ``OptimWrapper`` (``clip_grad``,
            ``accumulative_counts``).

    Raises:
        TypeError: the optimizer is not an :class:`MTAdamW`.
    """

    def __init__(self, optimizer: MTAdamW, **kwargs) -> None:
        if not isinstance(optimizer, MTAdamW):
            raise TypeError(
                'MTAdamWOptimWrapper needs an MTAdamW optimizer, got '
                f'{type(optimizer).__name__}'
            )
        super().__init__(optimizer, **kwargs)

    def step(self, **kwargs) -> None:
        """Normalise, clip (if configured), then ``optimizer.step()``."""
        self.optimizer.normalize_grads()
        super().step(**kwargs)
