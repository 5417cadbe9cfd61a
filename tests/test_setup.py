# Copyright (c) mmvfm contributors. All rights reserved.
"""Packaging: a wheel carries the mim metadata (configs, tools, index)."""

import os.path as osp
import shutil
import subprocess
import sys
import zipfile

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_wheel_has_mim_extension(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('setup.py', 'README.md', 'model-index.yml'):
        shutil.copy(osp.join(REPO_ROOT, name), src / name)
    for name in ('mmvfm', 'configs', 'tools', 'requirements'):
        shutil.copytree(
            osp.join(REPO_ROOT, name),
            src / name,
            ignore=shutil.ignore_patterns('__pycache__', '.mim'),
        )
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'pip',
            'wheel',
            '--no-deps',
            '--no-build-isolation',
            '-q',
            '-w',
            str(tmp_path / 'dist'),
            '.',
        ],
        cwd=str(src),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / 'dist').glob('mmvfm-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        'mmvfm/__init__.py',
        'mmvfm/.mim/tools/train.py',
        'mmvfm/.mim/tools/dist_train.sh',
        'mmvfm/.mim/model-index.yml',
        'mmvfm/.mim/configs/toy/metafile.yml',
        'mmvfm/.mim/configs/toy/'
        'retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py',
    ):
        assert expected in names, expected
    assert not any(n.startswith(('tests/', 'projects/')) for n in names)


def _requirements(name: str) -> dict:
    """``{package: specifier}`` of a requirements file (no includes)."""
    from packaging.requirements import Requirement

    reqs = {}
    with open(osp.join(REPO_ROOT, 'requirements', name)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line and not line.startswith('-r'):
                req = Requirement(line)
                reqs[req.name.lower()] = req.specifier
    return reqs


def test_install_requirements_are_the_accepted_ranges():
    """setup.py asks for ranges; every tested pin lies in its range, and
    the OpenMMLab ranges are the ones ``import mmvfm`` checks."""
    from packaging.version import Version

    from mmvfm.version import REQUIRED_VERSIONS

    accepted = _requirements('accepted.txt')
    pins = _requirements('runtime.txt')
    assert set(pins) - {'torch', 'mmcv'} == set(accepted)
    for name, spec in pins.items():
        assert not any(s.operator == '==' for s in accepted.get(name, ()))
        for pin in [s.version for s in spec if s.operator == '==']:
            assert Version(pin) in accepted.get(name, spec), (name, pin)
    for name, (low, high, _) in REQUIRED_VERSIONS.items():
        if name in accepted:
            assert str(accepted[name]) in (
                f'<{high},>={low}',
                f'>={low},<{high}',
            ), name
    with open(osp.join(REPO_ROOT, 'setup.py')) as f:
        assert "parse_requirements('requirements/accepted.txt')" in f.read()
