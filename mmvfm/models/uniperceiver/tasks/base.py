# Copyright (c) mmvfm contributors. All rights reserved.
"""What a Uni-Perceiver v2 task type gives the model."""

from typing import Dict, List

from torch import Tensor


class UniPerceiverTask:
    """One task type of :class:`~mmvfm.models.uniperceiver.UniPerceiverV2`,
    for the task ``name`` of the model's ``tasks``.

    A type is stateless (no parameters: the model's modules are shared by
    every task) and reads its config live from ``model.task_cfgs[name]``.
    To add one: a module in this folder with a subclass registered under
    its type name (``@UNIPERCEIVER_TASKS.register_module('vqa')``), imported
    in ``tasks/__init__.py``; the config then says ``type='vqa'``.

    Args:
        name (str): the task's name in the model's ``tasks``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> dict:
        """The task config with this type's defaults filled and its keys
        checked (the keys every task has are checked already:
        :func:`~mmvfm.models.uniperceiver.task_cfg.check_task`)."""
        return cfg

    @classmethod
    def check_model(cls, model, names: List[str]) -> None:
        """Build-time checks that need the built model, once for all tasks
        ``names`` of this type."""

    def uses_collective(self, model) -> bool:
        """Whether the loss runs a cross-rank collective."""
        return False

    def loss(self, model, inputs: Tensor, data_samples: list) -> Dict:
        """The task's losses, unweighted, keys without the task prefix:
        ``'loss'`` (the NLL over the candidates) and any others."""
        raise NotImplementedError

    def predict(self, model, inputs: Tensor, data_samples: list) -> list:
        """The data samples with the fields the task's metric reads."""
        raise NotImplementedError
