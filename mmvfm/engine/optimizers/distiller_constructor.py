# Copyright (c) mmvfm contributors. All rights reserved.
import torch.nn as nn
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DistillerOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Build the optimizer over a distiller's trainable parts only.

    mmengine's default constructor passes ``model.parameters()`` to the
    optimizer, frozen teacher included. This one gives it the modules named
    in ``trainable`` (default: the student and the distillation losses),
    under the same names, so ``paramwise_cfg`` keys such as
    ``'student.backbone'`` keep working. The teacher's parameters never
    enter the optimizer (nor its state).

    Args:
        optim_wrapper_cfg (dict), paramwise_cfg (dict, optional): as
            :class:`DefaultOptimWrapperConstructor`.
        trainable (tuple[str]): top-level sub-modules of the distiller to
            optimize.
    """

    def __init__(
        self,
        optim_wrapper_cfg: dict,
        paramwise_cfg: dict = None,
        trainable=('student', 'distill_losses'),
    ) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.trainable = tuple(trainable)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        view = nn.Module()
        for name in self.trainable:
            module = getattr(model, name, None)
            if not isinstance(module, nn.Module):
                raise AttributeError(
                    f'DistillerOptimWrapperConstructor: the model has no '
                    f'module {name!r} (trainable={self.trainable})'
                )
            view.add_module(name, module)
        return super().__call__(view)
