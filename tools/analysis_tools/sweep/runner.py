# Copyright (c) mmvfm contributors. All rights reserved.
"""Running a sweep: the tools/train.py command of a run, launching it in a
subprocess, ``done`` files, ``.running`` locks and ``--jobs``."""

import os
import os.path as osp
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Dict, List, Sequence

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')

_print_lock = threading.Lock()


def say(msg: str) -> None:
    """A progress line, whole even when runs finish at once."""
    with _print_lock:
        print(f'[seed_sweep {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_name(variant: str, seed: int) -> str:
    return f'{variant}_s{seed}'


def train_command(
    config: str,
    work_dir: str,
    name: str,
    seed: int,
    options: Sequence[str],
    nproc: int = 1,
) -> List[str]:
    """The tools/train.py command line of one run: one process, or
    ``nproc`` processes through ``torch.distributed.run --standalone``
    (each run its own free rendezvous port, so runs can overlap)."""
    launch = [sys.executable, TRAIN_SCRIPT, config]
    if nproc > 1:
        launch = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            f'--nproc_per_node={nproc}',
            TRAIN_SCRIPT,
            config,
            '--launcher',
            'pytorch',
        ]
    return [
        *launch,
        '--work-dir',
        work_dir,
        '--cfg-options',
        f'randomness.seed={seed}',
        f'experiment_name={name}',
        f'visualizer.name={name}',
        *options,
    ]


def run_one(
    config: str,
    options: Sequence[str],
    seed: int,
    work_dir: str,
    log_path: str,
    threads: int = 1,
    nproc: int = 1,
) -> int:
    """Train one run in a subprocess, its output to ``log_path``
    (``threads`` per process, ``nproc`` processes).

    Returns:
        int: the exit status of tools/train.py (of the launcher if nproc > 1).
    """
    name = osp.basename(osp.normpath(work_dir))
    cmd = train_command(config, work_dir, name, seed, options, nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write(' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return proc.returncode


def _take_lock(path: str) -> bool:
    """Create ``path`` holding this process id, unless a live process
    holds it; a lock left by a dead process is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    os.kill(int(f.read().strip() or 0), 0)
                return False  # its process is alive
            except (OSError, ValueError):
                os.remove(path)  # stale
                continue
        with os.fdopen(fd, 'w') as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_sweep(
    work: str,
    variants: Dict[str, dict],
    seeds: Sequence[int],
    threads: int = 1,
    jobs: int = 1,
    nproc: int = 1,
    published: Sequence[str] = (),
    run: Callable[..., int] = run_one,
) -> List[str]:
    """Train every (variant, seed) run whose ``done`` file is missing and
    that is not in ``published`` (runs whose values ``--merge`` brings),
    ``jobs`` at a time, each with ``nproc`` processes, each by ``run``
    (:func:`run_one`'s signature; tests pass a fake trainer).

    Returns:
        list[str]: the log paths of the runs that failed.
    """
    todo = []
    for variant, spec in variants.items():
        for seed in seeds:
            name = run_name(variant, seed)
            if osp.isfile(osp.join(work, name, 'done')):
                say(f'skip {name} (done)')
            elif name in published:
                say(f'skip {name} (published: --merge)')
            else:
                todo.append((name, spec, seed))
    if not todo:
        return []
    os.makedirs(work, exist_ok=True)
    say(f'{len(todo)} run(s) to train, {jobs} at a time')

    def launch(index: int, name: str, spec: dict, seed: int):
        run_dir = osp.join(work, name)
        log_path = osp.join(work, f'{name}.log')
        # checked again at launch: another sweep over the same WORK (other
        # seeds, say) may have finished or started this run meanwhile
        if osp.isfile(osp.join(run_dir, 'done')):
            say(f'skip {name} (done meanwhile)')
            return None
        lock = osp.join(work, f'{name}.running')
        if not _take_lock(lock):
            say(f'skip {name} (another sweep is running it: {lock})')
            return None
        say(f'start {name} ({index}/{len(todo)}), log {log_path}')
        start = time.perf_counter()
        try:
            code = run(
                spec['config'],
                spec['options'],
                seed,
                run_dir,
                log_path,
                threads,
                nproc,
            )
        except Exception as e:  # a launch error fails this run only
            code, error = -1, f'{type(e).__name__}: {e}'
        else:
            error = f'exit status {code}'
        finally:
            os.remove(lock)
        elapsed = time.perf_counter() - start
        if code == 0:
            os.makedirs(run_dir, exist_ok=True)
            with open(osp.join(run_dir, 'done'), 'w') as f:
                f.write(f'{elapsed:.1f} s\n')
            say(f'finished {name} in {elapsed:.1f} s')
            return None
        say(f'FAILED {name} after {elapsed:.1f} s ({error}), see {log_path}')
        return log_path

    failed = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(launch, i, *task) for i, task in enumerate(todo, 1)
        ]
        for future in as_completed(futures):
            log_path = future.result()
            if log_path is not None:
                failed.append(log_path)
    say(
        f'trained {len(todo) - len(failed)} of {len(todo)} run(s) in '
        f'{time.perf_counter() - start:.1f} s'
    )
    return sorted(failed)
