# Copyright (c) mmvfm contributors. All rights reserved.
"""AtomicCheckpointHook: with max_keep_ckpts=1 a complete checkpoint and a
``last_checkpoint`` naming it exist at every moment, a SIGKILL during a
write leaves a resumable run, and stray temporary files are cleaned. The
same probes on mmengine's CheckpointHook show the window it leaves."""

import glob
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mmvfm.fileio import safe_load

pytestmark = pytest.mark.usefixtures('one_thread')

# A tiny mmengine run, importable by the test and by a child process.
RUN = textwrap.dedent(
    """
    import torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    import mmvfm  # noqa: F401  (registers AtomicCheckpointHook)


    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 1)

        def forward(self, inputs, labels=None, mode='loss'):
            if isinstance(inputs, list):
                inputs = torch.stack(inputs)
            return dict(loss=self.fc(inputs).pow(2).mean())


    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return dict(inputs=torch.full((4,), float(i)))


    class StartIter(Hook):
        # the iteration training starts at (after a resume)
        def before_train(self, runner):
            self.iter = runner.iter


    def make_runner(
        work_dir,
        hook='AtomicCheckpointHook',
        max_iters=3,
        resume=False,
        name='ckpt',
        by_epoch=False,
        custom_hooks=None,
        **ckpt,
    ):
        ckpt = dict(dict(interval=1, max_keep_ckpts=1), **ckpt)
        if by_epoch:  # 4 iterations an epoch
            train_cfg = dict(by_epoch=True, max_epochs=max_iters)
            sampler = dict(type='DefaultSampler', shuffle=False)
        else:
            train_cfg = dict(by_epoch=False, max_iters=max_iters)
            sampler = dict(type='InfiniteSampler', shuffle=False)
        return Runner(
            model=Tiny(),
            work_dir=work_dir,
            experiment_name=name,
            train_dataloader=dict(
                dataset=Data(), sampler=sampler, batch_size=4, num_workers=0
            ),
            train_cfg=train_cfg,
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            default_hooks=dict(
                checkpoint=dict(type=hook, by_epoch=by_epoch, **ckpt),
                logger=dict(type='LoggerHook', interval=1),
            ),
            custom_hooks=custom_hooks,
            default_scope='mmdet',
            resume=resume,
            log_level='WARNING',
        )
    """
)

# The child trains with HOOK; at its third save the write stops halfway,
# tells the parent (READY) and waits to be killed.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, os.path.dirname(__file__))
    from mmengine.fileio import LocalBackend
    from run_tiny import make_runner

    work_dir, hook, ready = sys.argv[1:4]
    put = LocalBackend.put
    saves = []

    def slow_put(self, obj, filepath):
        saves.append(filepath)
        if len(saves) == 3:
            with open(filepath, 'wb') as f:
                f.write(obj[: len(obj) // 2])
                f.flush()
            open(ready, 'w').close()
            time.sleep(120)
        return put(self, obj, filepath)

    LocalBackend.put = slow_put
    make_runner(work_dir, hook, max_iters=10).train()
    """
)


@pytest.fixture
def run_module(tmp_path, monkeypatch):
    (tmp_path / 'run_tiny.py').write_text(RUN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import run_tiny

    return importlib.reload(run_tiny)


def _complete(path: str) -> bool:
    try:
        safe_load(path, 'cpu')
    except Exception:
        return False
    return True


def _complete_checkpoints(work_dir: str) -> list:
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    return [p for p in found if _complete(p)]


def _last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


@pytest.mark.parametrize(
    'kwargs, saved',
    [
        # every iteration, the older ones removed
        (dict(max_iters=3), 'iter_3.pth'),
        # save_last: iteration 2 by the interval, 3 as the last one
        (dict(max_iters=3, interval=2, save_last=True), 'iter_3.pth'),
        (dict(max_iters=2, by_epoch=True), 'epoch_2.pth'),
    ],
    ids=['every-iter', 'save_last', 'by_epoch'],
)
def test_keeps_one_complete_checkpoint_and_no_temp_files(
    run_module, tmp_path, kwargs, saved
):
    """max_keep_ckpts=1: after training only the last checkpoint is left,
    complete, named by ``last_checkpoint``, and no temporary file."""
    work_dir = str(tmp_path / 'work')
    run_module.make_runner(work_dir, **kwargs).train()
    names = os.listdir(work_dir)
    assert [p for p in names if p.endswith('.pth')] == [saved]
    assert [osp.basename(p) for p in _complete_checkpoints(work_dir)] == [
        saved
    ]
    assert _last_checkpoint(work_dir) == osp.join(work_dir, saved)
    assert not glob.glob(osp.join(work_dir, '.*'))
    ckpt = safe_load(osp.join(work_dir, saved))
    key = 'epoch' if kwargs.get('by_epoch') else 'iter'
    assert ckpt['meta'][key] == int(saved.split('_')[1][: -len('.pth')])
    # as CheckpointHook: the message hub knows what is kept
    info = ckpt['message_hub']['runtime_info']
    assert info['keep_ckpt_ids'] == [ckpt['meta'][key]]
    assert info['last_ckpt'] == osp.join(work_dir, saved)


@pytest.mark.parametrize(
    'hook, window', [('AtomicCheckpointHook', False), ('CheckpointHook', True)]
)
def test_a_complete_checkpoint_exists_during_every_write(
    run_module, tmp_path, monkeypatch, hook, window
):
    """At the moment each checkpoint is written, the previous one is still
    complete and ``last_checkpoint`` names it (mmengine's hook deletes it
    first)."""
    from mmengine.fileio import LocalBackend

    work_dir = str(tmp_path / 'work')
    put = LocalBackend.put
    gaps = []

    def checking_put(self, obj, filepath):
        if filepath.endswith(('.pth', f'.pth.tmp-{os.getpid()}')):
            if '1.pth' not in filepath:  # a previous checkpoint exists
                last = _last_checkpoint(work_dir)
                if not (_complete_checkpoints(work_dir) and _complete(last)):
                    gaps.append(filepath)
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', checking_put)
    run_module.make_runner(work_dir, hook, 4, name=hook).train()
    assert bool(gaps) is window, gaps


@pytest.mark.parametrize('hook', ['AtomicCheckpointHook', 'CheckpointHook'])
def test_sigkill_during_a_write(run_module, tmp_path, hook):
    """SIGKILL while the third checkpoint is half written: ours leaves
    iter_2 complete, named by ``last_checkpoint`` and resumable;
    mmengine's leaves nothing complete."""
    work_dir = str(tmp_path / 'work')
    ready = str(tmp_path / 'READY')
    (tmp_path / 'child.py').write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / 'child.py'), work_dir, hook, ready],
        env=env,
    )
    try:
        deadline = time.time() + 120
        while not osp.exists(ready):
            assert child.poll() is None, 'the child ended before its write'
            assert time.time() < deadline, 'the child never reached a write'
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()

    complete = _complete_checkpoints(work_dir)
    if hook == 'CheckpointHook':
        # the window this hook closes: iter_2 was deleted before iter_3
        # was written, and iter_3 is half a file
        assert complete == []
        assert not _complete(_last_checkpoint(work_dir))
        return
    assert [osp.basename(p) for p in complete] == ['iter_2.pth']
    assert _last_checkpoint(work_dir) == complete[0]
    stray = glob.glob(osp.join(work_dir, '.iter_3.pth.tmp-*'))
    assert len(stray) == 1 and not _complete(stray[0])

    # resuming comes back from iter_2, cleans the stray file, goes on
    start = run_module.StartIter()
    runner = run_module.make_runner(
        work_dir,
        hook,
        max_iters=4,
        resume=True,
        name='resumed',
        custom_hooks=[start],
    )
    runner.train()
    assert start.iter == 2 and runner.iter == 4
    assert not glob.glob(osp.join(work_dir, '.*tmp-*'))
    assert [osp.basename(p) for p in _complete_checkpoints(work_dir)] == [
        'iter_4.pth'
    ]
    resumed = safe_load(osp.join(work_dir, 'iter_4.pth'))
    assert resumed['meta']['iter'] == 4
    assert torch.is_tensor(resumed['state_dict']['fc.weight'])


def test_stray_temp_files_are_removed_and_never_loaded(run_module, tmp_path):
    """Stray temporary files (of a checkpoint, of ``last_checkpoint``) are
    removed before training and at the next save; a resume takes the
    checkpoint ``last_checkpoint`` names, not a newer stray file."""
    from mmengine.hooks import Hook

    work_dir = tmp_path / 'work'
    run_module.make_runner(str(work_dir), max_iters=1).train()
    # a complete, newer checkpoint under a temporary name: still not used
    stray = work_dir / '.iter_7.pth.tmp-99999'
    shutil.copy(work_dir / 'iter_1.pth', stray)
    stray_last = work_dir / '.last_checkpoint.tmp-99999'
    stray_last.write_text(str(stray))
    unrelated = [work_dir / 'notes.txt', work_dir / '.keep.tmp-x']
    for path in unrelated:
        path.write_text('kept')
    later = work_dir / '.iter_2.pth.tmp-12345'

    class DropStray(Hook):
        # after before_train's clean-up, before the save of iteration 2
        def after_train_iter(self, runner, batch_idx, *args, **kwargs):
            if runner.iter == 1:
                assert not stray.exists() and not stray_last.exists()
                later.write_bytes(b'half a checkpoint')

    start = run_module.StartIter()
    run_module.make_runner(
        str(work_dir),
        max_iters=2,
        resume=True,
        name='resumed',
        custom_hooks=[start, DropStray()],
    ).train()
    assert start.iter == 1
    assert not stray.exists() and not stray_last.exists()
    assert not later.exists()
    assert all(path.exists() for path in unrelated)
    assert _last_checkpoint(str(work_dir)) == str(work_dir / 'iter_2.pth')


def test_other_ranks_write_nothing(run_module, tmp_path, monkeypatch):
    """On a rank other than 0, ``Runner.save_checkpoint`` is still called
    (wrappers gather the state on every rank) but nothing is written,
    renamed or deleted."""
    import mmengine.dist.utils as dist_utils

    work_dir = tmp_path / 'work'
    runner = run_module.make_runner(str(work_dir), max_iters=2)
    calls = []
    save = runner.save_checkpoint

    def counting_save(*args, **kwargs):
        calls.append(args[1])
        return save(*args, **kwargs)

    runner.save_checkpoint = counting_save
    monkeypatch.setattr(dist_utils, 'get_rank', lambda group=None: 1)
    runner.train()
    assert len(calls) == 2
    assert not list(work_dir.glob('*.pth'))
    assert not list(work_dir.glob('.*'))
    assert not (work_dir / 'last_checkpoint').exists()


def test_non_local_backend_falls_back(monkeypatch):
    """A non-local ``file_backend`` (s3, petrel, ...): CheckpointHook's
    save, unchanged."""
    from mmengine.fileio import FileClient
    from mmengine.hooks import CheckpointHook

    from mmvfm.engine.hooks import AtomicCheckpointHook

    hook = AtomicCheckpointHook(interval=1)
    hook.file_backend = FileClient('disk')
    assert hook._is_local()
    calls = []
    monkeypatch.setattr(
        CheckpointHook,
        '_save_checkpoint_with_step',
        lambda self, runner, step, meta: calls.append(step),
    )
    hook.file_backend = object()  # e.g. a PetrelBackend
    assert not hook._is_local()
    hook._save_checkpoint_with_step(None, 3, {})
    assert calls == [3]


def test_missing_save_best_key_warns(run_module, tmp_path, monkeypatch):
    """An evaluation without the ``save_best`` key (an untrained detector
    gives no bbox metrics) warns and keeps the best checkpoint; the next
    one with the key saves it. mmengine's hook raises KeyError there."""
    from mmengine.hooks import CheckpointHook

    from mmvfm.engine.hooks import AtomicCheckpointHook

    runner = run_module.make_runner(str(tmp_path / 'work'), max_iters=1)
    key = 'det/coco/bbox_mAP'
    kwargs = dict(interval=1, by_epoch=False, save_best=key, rule='greater')
    stock = CheckpointHook(**kwargs)
    stock.before_train(runner)
    with pytest.raises(KeyError):
        stock._save_best_checkpoint(runner, {'cls/accuracy/top1': 50.0})

    hook = AtomicCheckpointHook(**kwargs)
    hook.before_train(runner)
    warnings = []
    monkeypatch.setattr(runner.logger, 'warning', warnings.append)
    hook._save_best_checkpoint(runner, {'cls/accuracy/top1': 50.0})
    assert len(warnings) == 1
    assert repr(key) in warnings[0] and 'cls/accuracy/top1' in warnings[0]
    assert not list((tmp_path / 'work').rglob('best_*.pth'))
    assert 'best_score' not in runner.message_hub.runtime_info

    hook._save_best_checkpoint(runner, {key: 0.25, 'cls/accuracy/top1': 50})
    assert len(warnings) == 1
    (best,) = (tmp_path / 'work').rglob('best_*.pth')
    assert best.name == 'best_det_coco_bbox_mAP_iter_0.pth'
    assert runner.message_hub.get_info('best_score') == 0.25
