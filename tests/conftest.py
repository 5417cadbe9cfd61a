# Copyright (c) mmvfm contributors. All rights reserved.
"""Shared fixtures: a tiny toy COCO set and a tiny detector config."""

import glob
import importlib.util
import os
import os.path as osp

# pytest-xdist (``-n 2`` in pyproject.toml's addopts): one process per core,
# so one intra-op thread per process (and in every subprocess a test
# starts); two OpenMP threads per worker on 2 cores would spin against each
# other. Set before torch is imported.
if os.environ.get('PYTEST_XDIST_WORKER'):
    for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[_var] = '1'

import pytest  # noqa: E402

import mmvfm  # noqa: F401, E402  (stack fixes before anything imports mmdet)
from mmvfm.utils import register_all_modules  # noqa: E402

if os.environ.get('PYTEST_XDIST_WORKER'):
    import torch

    torch.set_num_threads(1)

# mmdet's registries and default scope, as the Runner sets them
register_all_modules(init_default_scope=True)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# every config a user can run: configs/ and projects/*/configs/
ALL_CONFIGS = sorted(
    p
    for pattern in ('configs/**/*.py', 'projects/*/configs/**/*.py')
    for p in glob.glob(osp.join(REPO_ROOT, pattern), recursive=True)
    if '_base_' not in p
)
# mmpretrain's ViT at toy size (32 px, patch 8: 4 x 4 tokens, 2 blocks)
TINY_VIT = dict(
    type='mmpretrain.VisionTransformer',
    arch=dict(
        embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64
    ),
    img_size=32,
    patch_size=8,
)
TOY_CONFIG = osp.join(
    REPO_ROOT,
    'configs/toy/retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py',
)


def load_tool(rel_path: str):
    """A script under tools/ (``'train.py'``, ``'misc/smoke_run.py'``) as
    a module, to call its ``main(argv)`` in process."""
    path = osp.join(REPO_ROOT, 'tools', rel_path)
    name = 'tool_' + rel_path.replace('/', '_')[:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gloo_child(rank, world_size, port, queue, worker, args):
    import os
    import traceback

    import torch.distributed as dist

    try:
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        dist.init_process_group('gloo', rank=rank, world_size=world_size)
        queue.put((rank, 'ok', worker(rank, *args)))
    except Exception:
        queue.put((rank, 'crash', traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_gloo_ranks(worker, *args, world_size: int = 2) -> dict:
    """``worker(rank, *args)`` in ``world_size`` spawned processes joined
    in a gloo group on localhost; returns ``{rank: result}``. ``worker``
    must be a module-level function (the children import it; fork would
    deadlock in OpenMP once the parent has run torch ops), and its results
    picklable without shared memory (lists and floats, not tensors). A
    worker's exception fails the test with its traceback."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_gloo_child,
            args=(r, world_size, port, queue, worker, args),
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, kind, value = queue.get(timeout=180)
        assert kind == 'ok', f'rank {rank}:\n{value}'
        results[rank] = value
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors: on a shared 2-core
    machine a second OpenMP thread spins against other jobs and makes small
    ops 10-50x slower. Use with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory) -> str:
    """A tiny toy COCO set (16 train / 8 val images of 48-64 px)."""
    from mmvfm.datasets import generate_toy_coco

    root = str(tmp_path_factory.mktemp('toy_coco'))
    generate_toy_coco(
        root,
        num_train=16,
        num_val=8,
        img_size=(48, 64),
        num_captions=3,
        seed=0,
        overwrite=True,
    )
    return root


def shrink_toy_run(
    cfg,
    toy_root: str,
    work_dir: str,
    name: str,
    max_iters: int,
    batch_size: int,
    val_images=None,
) -> str:
    """Make a toy config a test run, in place: ``work_dir`` and run
    names, ``max_iters`` iterations then one val pass, constant learning
    rate, a log line every iteration, a checkpoint at the end; every
    dataloader (each task's, for a multi-task config) without workers,
    ``batch_size`` images of 64 px from the tiny toy set at ``toy_root``
    (only the first ``val_images`` val images, if given).

    Returns:
        str: ``toy_root`` with a trailing ``/``.
    """
    root = toy_root.rstrip('/') + '/'
    cfg.merge_from_dict(
        {
            'work_dir': work_dir,
            'experiment_name': name,
            # mmdet names its visualizer 'visualizer'; a global instance by
            # that name would send a second run's logs to the first run's dir.
            'visualizer.name': name,
            'train_cfg.max_iters': max_iters,
            'train_cfg.val_interval': max_iters,
            'param_scheduler': [],
            'default_hooks.logger.interval': 1,
            'default_hooks.checkpoint.interval': max_iters,
        }
    )
    for split in ('train', 'val', 'test'):
        loaders = cfg[f'{split}_dataloader']
        loaders = [loaders] if 'dataset' in loaders else loaders.values()
        for loader in loaders:
            loader.num_workers = 0
            loader.persistent_workers = False
            loader.batch_size = batch_size
            loader.dataset.data_root = root
            if split == 'val' and val_images is not None:
                loader.dataset.indices = val_images
            for t in loader.dataset.pipeline:
                if t['type'] == 'Resize':
                    t['scale'] = (64, 64)
    return root


def tiny_detector_cfg(
    toy_root: str,
    work_dir: str,
    max_iters: int = 2,
    batch_size: int = 4,
    name: str = 'tiny',
):
    """The toy RetinaNet shrunk for tests: quarter-width ResNet-18, 64 px
    images, no data workers, ``max_iters`` iterations then one val pass,
    constant learning rate.

    Returns:
        Config
    """
    from mmengine.config import Config

    cfg = Config.fromfile(TOY_CONFIG)
    root = shrink_toy_run(cfg, toy_root, work_dir, name, max_iters, batch_size)
    ann_val = root + 'annotations/instances_val.json'
    cfg.merge_from_dict(
        {
            'model.backbone.base_channels': 16,
            'model.neck.in_channels': [16, 32, 64, 128],
            'model.neck.out_channels': 32,
            'model.bbox_head.in_channels': 32,
            'model.bbox_head.feat_channels': 32,
            'model.bbox_head.norm_cfg.num_groups': 8,
            # untrained models score below 0.05: keep predictions to evaluate
            'model.test_cfg.score_thr': 0.0,
            'val_evaluator.ann_file': ann_val,
            'test_evaluator.ann_file': ann_val,
        }
    )
    return cfg


@pytest.fixture
def tiny_cfg(toy_root, tmp_path, request):
    """Factory: ``tiny_cfg(max_iters=2, batch_size=4, name=...)`` -> Config
    whose experiment name (default: the test's name; mmengine keys its
    global logger and message hub by it) names its work dir in tmp_path."""

    def make(**kwargs):
        name = kwargs.setdefault('name', request.node.name)
        return tiny_detector_cfg(toy_root, str(tmp_path / name), **kwargs)

    return make


@pytest.fixture
def dist_train_probed(tmp_path):
    """Factory: ``run(cfg, task_probe=False) -> [rank0, rank1]``.

    Runs ``tools/dist_train.sh <cfg> 2`` (torchrun, gloo, one thread per
    process) with ``tests/data/ddp_probe_hook.py``'s ``DDPProbeHook``
    (and ``TaskGradProbeHook`` with ``task_probe=True``, its record under
    ``'task_probe'``) mixed in, and returns what was recorded on each rank.
    """
    import json
    import os
    import socket
    import subprocess
    import sys

    def run(cfg, task_probe=False):
        probe_dir = str(tmp_path / 'probe')
        cfg.custom_imports = dict(
            imports=['mmvfm', 'ddp_probe_hook'], allow_failed_imports=False
        )
        cfg.custom_hooks = [dict(type='DDPProbeHook', out_dir=probe_dir)]
        if task_probe:
            cfg.custom_hooks.append(
                dict(type='TaskGradProbeHook', out_dir=probe_dir)
            )
        cfg_path = str(tmp_path / 'ddp_cfg.py')
        cfg.dump(cfg_path)
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        env = dict(
            os.environ,
            PORT=str(port),
            PYTHON=sys.executable,
            OMP_NUM_THREADS='1',
        )
        env['PYTHONPATH'] = os.pathsep.join(
            [osp.join(REPO_ROOT, 'tests', 'data'), env.get('PYTHONPATH', '')]
        )
        proc = subprocess.run(
            [
                'bash',
                osp.join(REPO_ROOT, 'tools', 'dist_train.sh'),
                cfg_path,
                '2',
            ],
            cwd=str(tmp_path),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        records = []
        for rank in (0, 1):
            with open(osp.join(probe_dir, f'rank{rank}.json')) as f:
                records.append(json.load(f))
            if task_probe:
                name = osp.join(probe_dir, f'tasks_rank{rank}.json')
                with open(name) as f:
                    records[-1]['task_probe'] = json.load(f)
        return records

    return run


MULTITASK_CONFIG = osp.join(
    REPO_ROOT,
    'configs/multi_task/multitask_r18-w32_det-cls_1xb8-1000i_toy-coco.py',
)


def tiny_multitask_cfg(
    toy_root: str,
    work_dir: str,
    max_iters: int = 4,
    name: str = 'tiny_mt',
    strategy: str = 'unmixed',
):
    """The toy det+cls multi-task config shrunk for tests: quarter-width
    ResNet-18, 64 px images, batch 4 (det) / 4 (cls), no workers."""
    from mmengine.config import Config

    cfg = Config.fromfile(MULTITASK_CONFIG)
    root = shrink_toy_run(cfg, toy_root, work_dir, name, max_iters, 4)
    ann_val = root + 'annotations/instances_val.json'
    cfg.merge_from_dict(
        {
            'model.backbone.base_channels': 16,
            'model.tasks.det.neck.in_channels': [16, 32, 64, 128],
            'model.tasks.det.neck.out_channels': 32,
            'model.tasks.det.head.in_channels': 32,
            'model.tasks.det.head.feat_channels': 32,
            'model.tasks.det.head.norm_cfg.num_groups': 8,
            'model.tasks.det.head.test_cfg.score_thr': 0.0,
            'model.tasks.cls.head.in_channels': 128,
            'train_cfg.strategy': strategy,
            'val_evaluator.det.ann_file': ann_val,
            'test_evaluator.det.ann_file': ann_val,
        }
    )
    return cfg


@pytest.fixture
def tiny_mt_cfg(toy_root, tmp_path, request):
    """Factory: ``tiny_mt_cfg(max_iters=4, strategy='unmixed', name=...)``
    -> the tiny multi-task Config, work dir in tmp_path."""

    def make(**kwargs):
        name = kwargs.setdefault('name', request.node.name)
        return tiny_multitask_cfg(toy_root, str(tmp_path / name), **kwargs)

    return make
