# Copyright (c) mmvfm contributors. All rights reserved.
"""A hook for the DDP test: records, per rank, what the test asserts."""

import hashlib
import json
import os
import os.path as osp

from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DDPProbeHook(Hook):
    """Writes ``<out_dir>/rank{r}.json``: world size, the model wrapper, a
    digest of all parameters after every train iteration, the number of
    val images this rank processed and the val metrics it received."""

    priority = 'LOWEST'

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.record = dict(digests=[], val_images=0, metrics=None)

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        model = runner.model
        self.record['wrapper'] = type(model).__name__
        if is_model_wrapper(model):
            model = model.module
        sha = hashlib.sha256()
        for param in model.parameters():
            sha.update(param.detach().cpu().numpy().tobytes())
        self.record['digests'].append(sha.hexdigest())

    def after_val_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        self.record['val_images'] += len(data_batch['data_samples'])

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.record['metrics'] = metrics

    def after_run(self, runner) -> None:
        rank, world_size = get_dist_info()
        self.record.update(rank=rank, world_size=world_size)
        os.makedirs(self.out_dir, exist_ok=True)
        with open(osp.join(self.out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(self.record, f)


@HOOKS.register_module()
class TaskGradProbeHook(Hook):
    """Writes ``<out_dir>/tasks_rank{r}.json``: per train iteration, the
    task of the batch and the heads whose parameters received a gradient
    in this rank's own backward (tensor hooks fire before DDP averages)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.tasks, self.heads, self._current = [], [], set()

    def before_train(self, runner) -> None:
        model = (
            runner.model.module
            if is_model_wrapper(runner.model)
            else runner.model
        )
        for task, head in model.heads.items():
            param = next(p for p in head.parameters() if p.requires_grad)
            param.register_hook(
                lambda grad, task=task: self._current.add(task)
            )

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._current = set()

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        self.tasks.append(data_batch['task'])
        self.heads.append(sorted(self._current))

    def after_run(self, runner) -> None:
        rank, world_size = get_dist_info()
        os.makedirs(self.out_dir, exist_ok=True)
        with open(osp.join(self.out_dir, f'tasks_rank{rank}.json'), 'w') as f:
            json.dump(
                dict(
                    rank=rank,
                    world_size=world_size,
                    tasks=self.tasks,
                    heads=self.heads,
                ),
                f,
            )
