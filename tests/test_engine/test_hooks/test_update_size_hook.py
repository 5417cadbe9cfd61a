# Copyright (c) mmvfm contributors. All rights reserved.
"""UpdateSizeHook: the update RMS / lr of AdamW against a hand computation
of AdamW's equations, per group and per named set, and logged by a Runner."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmvfm.engine.hooks import UpdateSizeHook

pytestmark = pytest.mark.usefixtures('one_thread')


class _Net(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 4)
        self.head_a = nn.Linear(4, 1)
        self.head_b = nn.Linear(4, 1)

    def forward(self, x, task='a', mode='loss'):
        head = self.head_a if task == 'a' else self.head_b
        out = head(torch.tanh(self.body(x)))
        return dict(loss=(out**2).mean())


def _adamw_numpy(x, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """torch's AdamW (decoupled decay, bias correction), in NumPy: the
    parameter after each step."""
    m, v, out = np.zeros_like(x), np.zeros_like(x), []
    for t, g in enumerate(grads, 1):
        x = x * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(x.copy())
    return out


def _runner_stub(model, optimizer):
    return SimpleNamespace(
        model=model,
        optim_wrapper=OptimWrapper(optimizer),
        message_hub=MessageHub.get_instance('test_update_size_hook'),
        iter=0,
    )


def test_adamw_against_the_hand_computation():
    torch.manual_seed(0)
    net = _Net().double()
    lrs = dict(body=0.01, heads=0.003)
    opt = torch.optim.AdamW(
        [
            dict(params=net.body.parameters(), lr=lrs['body']),
            dict(
                params=[*net.head_a.parameters(), *net.head_b.parameters()],
                lr=lrs['heads'],
            ),
        ],
        weight_decay=0.05,
    )
    runner = _runner_stub(net, opt)
    hook = UpdateSizeHook(
        sets=dict(body=r'^body\.', head_b=r'^head_b\.', weight=r'weight$')
    )
    per_group = UpdateSizeHook()
    hook.before_train(runner)
    per_group.before_train(runner)
    rng = np.random.default_rng(0)
    init = {n: p.detach().numpy().copy() for n, p in net.named_parameters()}
    grads = {n: [] for n in init}
    measured = []
    for step in range(4):
        task = 'a' if step % 2 == 0 else 'b'
        hook.before_train_iter(runner, step)
        per_group.before_train_iter(runner, step)
        opt.zero_grad(set_to_none=True)
        for name, p in net.named_parameters():
            if name.startswith('head_') and not name.startswith(
                f'head_{task}'
            ):
                continue  # the other task's head: no gradient
            g = rng.normal(size=p.shape)
            p.grad = torch.from_numpy(g)
            grads[name].append((step, g))
        opt.step()
        measured.append((hook.measure(), per_group.measure()))
        hook.after_train_iter(runner, step)
        per_group.after_train_iter(runner, step)
        runner.iter += 1

    # each parameter's trajectory by hand; a head only steps on its task's
    # steps (torch's AdamW skips a parameter without a gradient)
    lr_of = {n: lrs['body' if n.startswith('body') else 'heads'] for n in init}
    traj = {}
    for name, x0 in init.items():
        after = _adamw_numpy(
            x0, [g for _, g in grads[name]], lr_of[name], 0.05
        )
        traj[name] = {}
        prev = x0
        for (step, _), x in zip(grads[name], after):
            traj[name][step] = (x - prev) / lr_of[name]
            prev = x

    def rms(step, names):
        moved = [traj[n][step] for n in names if step in traj[n]]
        if not moved:
            return None
        return math.sqrt(
            sum(float((d**2).sum()) for d in moved)
            / sum(d.size for d in moved)
        )

    sets = dict(
        body=['body.weight', 'body.bias'],
        head_b=['head_b.weight', 'head_b.bias'],
        weight=['body.weight', 'head_a.weight', 'head_b.weight'],
    )
    groups = dict(
        group0=sets['body'],
        group1=[
            'head_a.weight',
            'head_a.bias',
            'head_b.weight',
            'head_b.bias',
        ],
    )
    for step, (named, by_group) in enumerate(measured):
        for values, spec in ((named, sets), (by_group, groups)):
            expected = {
                k: rms(step, names)
                for k, names in spec.items()
                if rms(step, names) is not None
            }
            assert values.keys() == expected.keys(), step
            for key, value in expected.items():
                assert values[key] == pytest.approx(value, rel=1e-9), key
    assert 'head_b' not in measured[0][0]  # task a: head_b did not move
    # AdamW's first step moves each element by ~lr: RMS / lr ~ 1
    assert measured[0][0]['body'] == pytest.approx(1.0, abs=0.01)
    hub = runner.message_hub.get_scalar('train/update_rms/head_b')
    assert hub.current() == pytest.approx(measured[3][0]['head_b'])


def test_bad_configs():
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        UpdateSizeHook(interval=0)
    with pytest.raises(ValueError, match=r'sets.x is not a regex'):
        UpdateSizeHook(sets=dict(x='('))
    net = _Net()
    runner = _runner_stub(net, torch.optim.SGD(net.body.parameters(), lr=1))
    hook = UpdateSizeHook(sets=dict(heads=r'^head_'))
    with pytest.raises(ValueError, match='sets.heads .* matches no parameter'):
        hook.before_train(runner)


def test_logged_by_a_runner(tmp_path):
    data = [dict(x=torch.randn(2, 3)) for _ in range(6)]
    runner = Runner(
        model=_Net(),
        work_dir=str(tmp_path),
        train_dataloader=DataLoader(
            data, batch_size=1, collate_fn=lambda batch: batch[0]
        ),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        custom_hooks=[
            dict(type='UpdateSizeHook', sets=dict(body=r'^body\.'), interval=2)
        ],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2)),
        default_scope='mmdet',
    )
    runner.train()
    history = runner.message_hub.get_scalar('train/update_rms/body')
    assert len(history.data[0]) == 3  # iterations 2, 4 and 6
    assert all(0 < v < 2 for v in history.data[0])
