# Copyright (c) mmvfm contributors. All rights reserved.
"""openmim on a regular (non-editable) install of this checkout.

mim finds a package's configs, tools and model index only under
``<site-packages>/mmvfm/.mim``, which an editable install does not create
(``tools/install.sh --no-editable``). In a temporary venv that sees this
environment's packages (torch, mmcv, mmdet) through a ``.pth`` file, a copy
of the checkout is installed with ``pip install --no-deps
--no-build-isolation`` (no compiled ops), then ``mim list``, ``mim search``
for every collection of the metafiles, ``mim run``, ``mim train`` (2
iterations on a tiny toy set) and ``mim test`` of its checkpoint run as a
user runs them. One test: under pytest-xdist a module fixture would be
built once per worker.
"""

import glob
import importlib.util
import os
import os.path as osp
import shutil
import site
import subprocess
import sys
import tempfile

import pytest
import yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/toy/retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py'
# what a wheel is built from (tests/test_setup.py copies the same)
SOURCES = ('mmvfm', 'configs', 'tools', 'requirements')
TOP_FILES = ('setup.py', 'README.md', 'model-index.yml', 'pyproject.toml')
# no workers (one process), a log line and a checkpoint at iteration 2
FAST = [
    f'{loader}_dataloader.{key}'
    for loader in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]
TRAIN_OPTIONS = [
    'train_cfg.max_iters=2',
    'train_cfg.val_interval=2',
    'default_hooks.checkpoint.interval=2',
    'default_hooks.logger.interval=1',
    'train_dataloader.batch_size=2',
] + FAST

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('mim') is None,
    reason='openmim is not installed (tools/install.sh installs it)',
)


def collections() -> dict:
    """``{collection name: [model names]}`` of every metafile that
    model-index.yml imports."""
    with open(osp.join(REPO_ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    found = {}
    for metafile in index['Import']:
        with open(osp.join(REPO_ROOT, metafile)) as f:
            meta = yaml.safe_load(f)
        for collection in meta['Collections']:
            found.setdefault(collection['Name'], [])
        for model in meta['Models']:
            found[model['In Collection']].append(model['Name'])
    return found


def copy_checkout(dst: str) -> None:
    os.makedirs(dst)
    for name in TOP_FILES + ('MANIFEST.in',):
        if osp.isfile(osp.join(REPO_ROOT, name)):
            shutil.copy(osp.join(REPO_ROOT, name), osp.join(dst, name))
    for name in SOURCES:
        shutil.copytree(
            osp.join(REPO_ROOT, name),
            osp.join(dst, name),
            ignore=shutil.ignore_patterns(
                '__pycache__', '*.py[co]', '*.so', '.mim'
            ),
        )


def make_venv(path: str) -> str:
    """A venv whose Python also imports this environment's packages;
    returns its python. ``--system-site-packages`` would give the base
    interpreter's site-packages, not those of the venv running the tests,
    so a ``.pth`` file lists them (plain paths: their own ``.pth`` files,
    such as this environment's editable mmvfm finder, do not run)."""
    subprocess.run(
        [sys.executable, '-m', 'venv', '--without-pip', path], check=True
    )
    python = osp.join(path, 'bin', 'python')
    purelib = subprocess.run(
        [
            python,
            '-c',
            'import sysconfig; print(sysconfig.get_path("purelib"))',
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(osp.join(purelib, 'outer_site_packages.pth'), 'w') as f:
        f.write('\n'.join(site.getsitepackages()) + '\n')
    return python


def run(cmd: list, cwd: str, env: dict, timeout: int = 240) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f'{" ".join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}'
    )
    return proc.stdout


def test_mim_commands_on_a_regular_install():
    tmp = tempfile.mkdtemp(prefix='mmvfm_mim_')
    try:
        _check_mim(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_mim(tmp: str) -> None:
    src, workdir = osp.join(tmp, 'src'), osp.join(tmp, 'run')
    copy_checkout(src)
    os.makedirs(workdir)  # cwd of every command: no mmvfm/ beside it
    python = make_venv(osp.join(tmp, 'venv'))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(
        OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore'
    )
    mim = [python, '-m', 'mim']

    # the README's recipe, without the ops; --ignore-installed: never touch
    # this environment's own mmvfm, which the venv sees through the .pth
    run(
        [python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
        + ['--no-deps', '--no-build-isolation', '--ignore-installed', src],
        workdir,
        dict(env, MMVFM_WITH_OPS='0'),
        timeout=300,
    )
    package = run(
        [
            python,
            '-c',
            'import mmvfm, os; print(os.path.dirname(mmvfm.__file__))',
        ],
        workdir,
        env,
    ).strip()
    assert package.startswith(osp.join(tmp, 'venv')), package
    assert osp.isfile(osp.join(package, '.mim', 'model-index.yml'))

    listed = run(mim + ['list'], workdir, env)
    assert any(
        line.split()[:1] == ['mmvfm'] for line in listed.splitlines()
    ), listed

    run(mim + ['search', 'mmvfm'], workdir, env)
    for name, models in collections().items():
        found = run(mim + ['search', 'mmvfm', '--model', name], workdir, env)
        for model in models:
            assert f'config id: {model}\n' in found, (name, model, found)

    # a tiny toy set where the config looks for it (data/toy_coco of cwd)
    run(
        mim
        + ['run', 'mmvfm', 'generate_toy_coco', 'data/toy_coco']
        + ['--num-train', '16', '--num-val', '8'],
        workdir,
        env,
    )
    work_dir = osp.join(workdir, 'train')
    trained = run(
        mim
        + ['train', 'mmvfm', CONFIG, '--work-dir', work_dir]
        + ['--cfg-options']
        + TRAIN_OPTIONS,
        workdir,
        env,
    )
    # mim resolved the config to the installed copy, not to the checkout
    assert osp.join(package, '.mim', 'configs', 'toy') in trained, trained
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(checkpoint), glob.glob(osp.join(work_dir, '*'))

    tested = run(
        mim
        + ['test', 'mmvfm', CONFIG, '--checkpoint', checkpoint]
        + ['--work-dir', osp.join(workdir, 'test'), '--cfg-options']
        + FAST,
        workdir,
        env,
    )
    assert f'Load checkpoint from {checkpoint}' in tested, tested
    assert 'Testing finished successfully' in tested, tested
