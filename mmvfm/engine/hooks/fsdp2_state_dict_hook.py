# Copyright (c) mmvfm contributors. All rights reserved.
"""The hook that makes the ``Runner``'s checkpoints work with
:class:`~mmvfm.engine.model_wrappers.FSDP2Wrapper` (the wrapper's module
documentation says what the checkpoints hold)."""

import functools
import inspect

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from ..model_wrappers.fsdp2 import FSDP2Wrapper

__all__ = ['FSDP2StateDictHook']


@HOOKS.register_module()
class FSDP2StateDictHook(Hook):
    """Makes the ``Runner``'s checkpoints work with :class:`FSDP2Wrapper`.

    mmengine saves on rank 0 only (``Runner.save_checkpoint`` is
    ``master_only``), but gathering the shards needs every rank. Before the
    run this hook wraps ``runner.save_checkpoint`` (which every rank calls,
    from ``CheckpointHook``, best checkpoints included) in
    :meth:`FSDP2Wrapper.full_state`: all ranks gather the full model and
    optimizer state, then rank 0 writes an ordinary mmengine checkpoint
    (plain full tensors, the unwrapped model's keys, full optimizer state).
    It also attaches the optimizer, so that a resumed full optimizer state
    is sharded. Config: ``custom_hooks = [dict(type='FSDP2StateDictHook')]``.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model
        if not isinstance(model, FSDP2Wrapper):
            print_log(
                f'FSDP2StateDictHook: the model is a {type(model).__name__}, '
                'not an FSDP2Wrapper; nothing to do',
                logger='current',
            )
            return
        model._state_hook_attached = True
        if isinstance(runner.optim_wrapper, OptimWrapper) or hasattr(
            runner.optim_wrapper, 'optim_wrappers'
        ):
            model.attach_optimizer(runner.optim_wrapper)
        save = runner.save_checkpoint
        signature = inspect.signature(save)

        @functools.wraps(save)
        def save_checkpoint(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            optim = (
                runner.optim_wrapper
                if bound.arguments.get('save_optimizer', True)
                else None
            )
            if not isinstance(optim, OptimWrapper) and not hasattr(
                optim, 'optim_wrappers'
            ):
                optim = None
            with model.full_state(optim):
                return save(*args, **kwargs)

        runner.save_checkpoint = save_checkpoint
