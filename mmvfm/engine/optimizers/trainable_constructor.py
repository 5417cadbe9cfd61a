# Copyright (c) mmvfm contributors. All rights reserved.
import contextlib
import inspect
import logging
from typing import Iterator

import torch.nn as nn
from mmdet.registry import (
    OPTIM_WRAPPER_CONSTRUCTORS,
    OPTIM_WRAPPERS,
    OPTIMIZERS,
)
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper


@contextlib.contextmanager
def _quiet_current_logger() -> Iterator[None]:
    """Mute the per-parameter "is skipped since requires_grad=False"
    warnings of ``add_params`` (hundreds for a frozen backbone)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Build the optimizer over the parameters that require grad, only.

    mmengine's default constructor passes ``model.parameters()`` (frozen
    ones included) when there is no ``paramwise_cfg``. This one never gives
    the optimizer a frozen parameter: a distiller's teacher, a frozen
    backbone in "heads only" training, everything but LoRA in "LoRA only"
    training. ``paramwise_cfg`` works as in mmengine (parameter names are
    the model's own).

    Raises:
        ValueError: when no parameter requires grad.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = self.optimizer_cfg.copy()
        optimizer_cls = optimizer_cfg['type']
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cls)
        first_arg = next(iter(inspect.signature(optimizer_cls).parameters))
        if self.paramwise_cfg:
            params: list = []
            with _quiet_current_logger():
                self.add_params(params, model)
        else:
            params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                'TrainableOptimWrapperConstructor: no parameter '
                'of the model requires grad'
            )
        optimizer_cfg[first_arg] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(
            wrapper_cfg, default_args=dict(optimizer=optimizer)
        )
