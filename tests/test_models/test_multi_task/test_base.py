# Copyright (c) mmvfm contributors. All rights reserved.
"""BaseMultiTaskModel: the task interface the multi-task models share --
the task required and checked by forward, loss naming and weights, the
loops' defaults."""

import pytest
import torch

from mmvfm.models.multi_task import BaseMultiTaskModel


class _Toy(BaseMultiTaskModel):
    """Two tasks; ``'b'`` weighted 0.5; raw losses with a list value and a
    logged value that is not a loss."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    @property
    def tasks(self):
        return ['a', 'b']

    def loss_weight(self, task):
        return dict(a=1.0, b=0.5)[task]

    def task_loss(self, inputs, data_samples, task):
        x = self.scale * inputs.sum()
        return dict(loss_x=x, loss_levels=[x, 2 * x], acc=x.detach())

    def predict(self, inputs, data_samples, task):
        return [task] * len(inputs)

    def _forward(self, inputs, data_samples, task):
        return inputs * 2


def test_loss_names_and_weights():
    model = _Toy()
    x = torch.ones(2, 3)
    a = model(x, None, 'loss', task='a')
    b = model(x, None, 'loss', task='b')
    assert list(a) == ['a.loss_x', 'a.loss_levels', 'a.acc']
    assert float(a['a.loss_x']) == 6.0 and float(b['b.loss_x']) == 3.0
    assert [float(v) for v in b['b.loss_levels']] == [3.0, 6.0]
    assert isinstance(b['b.loss_levels'], list)
    assert float(b['b.acc']) == 6.0  # not a loss: not weighted
    assert model(x, None, 'predict', task='b') == ['b', 'b']
    assert torch.equal(model(x, task='a'), x * 2)


def test_task_is_required_and_checked():
    model = _Toy()
    x = torch.ones(1, 3)
    with pytest.raises(ValueError, match='_Toy needs the task of the batch'):
        model(x, None, 'loss')
    with pytest.raises(KeyError, match="no head for task 'c'"):
        model(x, None, 'loss', task='c')
    with pytest.raises(ValueError, match='mode must be'):
        model(x, None, 'both', task='a')


def test_defaults_and_task_names():
    model = _Toy()
    assert model.task_uses_collective('a') is False
    assert model.check_task_data('a', dict(classes=('x',))) is None
    BaseMultiTaskModel.check_task_names(['det', 'cls'])
    for bad in ('det.x', 'a/b'):
        with pytest.raises(ValueError, match='must not contain'):
            BaseMultiTaskModel.check_task_names([bad])
    with pytest.raises(ValueError, match='at least one task'):
        BaseMultiTaskModel.check_task_names([])
