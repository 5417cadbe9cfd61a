# Copyright (c) mmvfm contributors. All rights reserved.
"""Package metadata of mmvfm.

Install the whole pinned stack with ``bash tools/install.sh``; it installs
torch and mmcv (which must be built against the installed torch) before
this package. ``pip install -e .`` alone expects them to be present.

Compiled ops (mmcv's switch style): ``MMVFM_WITH_OPS=1 pip install
--no-build-isolation -e .`` builds ``mmvfm._ext`` from ``mmvfm/ops/csrc``
against the installed torch: the C++ CPU kernels always, the CUDA kernels
too when torch sees a GPU or ``FORCE_CUDA=1`` (``TORCH_CUDA_ARCH_LIST``
picks the architectures). Without it (the default of a plain pip install)
nothing is compiled, the ops run their PyTorch reference, and this script
says so on stderr (shown by ``pip install -v``).

mim (``mim train mmvfm CONFIG``, ``mim search mmvfm``) needs a regular,
non-editable install (``pip install --no-build-isolation .``): it looks for
``<site-packages>/mmvfm/.mim``, which holds copies of ``configs/``,
``tools/`` and ``model-index.yml`` (:func:`add_mim_extension`).
"""

import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def readme() -> str:
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'mmvfm', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'mmvfm/version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Requirement lines of a file, following ``-r`` includes."""
    reqs = []
    with open(osp.join(ROOT, fname), encoding='utf-8') as f:
        for line in f:
            line = line.split('#')[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(
                    osp.join(osp.dirname(fname), line[3:].strip())
                )
            else:
                reqs.append(line)
    return reqs


def get_url():
    """The checkout's ``remote.origin.url`` as an https URL (credentials
    dropped), or None: mmvfm has no public home page of its own, and the
    package metadata names none rather than a made-up one."""
    try:
        url = subprocess.run(
            ['git', '-C', ROOT, 'config', '--get', 'remote.origin.url'],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if url.startswith('git@') and ':' in url:  # git@host:owner/repo.git
        host, _, path = url[len('git@') :].partition(':')
        url = f'https://{host}/{path}'
    parts = urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        return None  # none, or a local path
    netloc = parts.hostname + (f':{parts.port}' if parts.port else '')
    path = parts.path[:-4] if parts.path.endswith('.git') else parts.path
    return urlunsplit(('https', netloc, path, '', ''))


def add_mim_extension() -> None:
    """Put configs/, tools/ and model-index.yml into ``mmvfm/.mim``.

    ``mim train mmvfm CONFIG`` finds the training script and the configs
    there: symlinks for editable installs (which mim 0.3.9 does not find:
    it looks in ``<site-packages>/mmvfm``), copies for wheels, sdists and
    regular installs. A copy replaces what a former build left, in
    ``mmvfm/.mim`` and in ``build/lib*/mmvfm/.mim`` (a file removed from
    the checkout must not reach the next wheel).
    """
    argv = ' '.join(sys.argv)
    if 'develop' in argv or 'editable' in argv:
        mode = 'symlink'
    elif any(cmd in argv for cmd in ('sdist', 'bdist_wheel', 'install')):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mmvfm', '.mim')
    if mode == 'copy':
        for stale in glob.glob(
            osp.join(ROOT, 'build', 'lib*', 'mmvfm', '.mim')
        ):
            shutil.rmtree(stale)
    os.makedirs(mim_path, exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml'):
        src = osp.join(ROOT, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns('__pycache__', '*.py[co]'),
            )
        else:
            shutil.copyfile(src, dst)


def get_extensions() -> list:
    """``mmvfm._ext`` when ``MMVFM_WITH_OPS=1``, else nothing."""
    if os.getenv('MMVFM_WITH_OPS', '0') != '1':
        print(
            'mmvfm: MMVFM_WITH_OPS is not 1: the compiled ops are not built, '
            'they run their PyTorch reference',
            file=sys.stderr,
        )
        return []
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    csrc = osp.join('mmvfm', 'ops', 'csrc')
    sources = [
        osp.join(csrc, 'pytorch', 'ms_deform_attn.cpp'),
        osp.join(csrc, 'cpu', 'ms_deform_attn_cpu.cpp'),
    ]
    args = dict(
        extra_compile_args={'cxx': ['-O3', '-fopenmp'], 'nvcc': ['-O3']},
        extra_link_args=['-fopenmp'],
    )
    if torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1':
        sources.append(osp.join(csrc, 'cuda', 'ms_deform_attn_cuda.cu'))
        return [CUDAExtension('mmvfm._ext', sources, **args)]
    args['extra_compile_args'].pop('nvcc')
    return [CppExtension('mmvfm._ext', sources, **args)]


if __name__ == '__main__':
    add_mim_extension()
    ext_modules = get_extensions()
    cmdclass = {}
    if ext_modules:
        from torch.utils.cpp_extension import BuildExtension

        cmdclass['build_ext'] = BuildExtension
    setup(
        name='mmvfm',
        version=get_version(),
        description='Vision foundation model methods for MMDetection 3.x: '
        'FGD, GQPos, SiA, Uni-Perceiver v2, ViSFT',
        long_description=readme(),
        long_description_content_type='text/markdown',
        url=get_url(),
        keywords='computer vision, object detection, distillation, DETR',
        packages=find_packages(
            exclude=('configs', 'tools', 'tests', 'projects', 'benchmarks')
        ),
        include_package_data=True,
        # csrc/: for load_ext_jit() from an installed wheel
        package_data={'mmvfm': ['.mim/**/*', '.mim/*', 'ops/csrc/*/*']},
        python_requires='>=3.8',
        license='Apache License 2.0',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Operating System :: OS Independent',
            'Programming Language :: Python :: 3',
        ],
        # torch and mmcv are not listed: a torch the user already has (a
        # CUDA build) must not be replaced, and mmcv must be built against
        # it. tools/install.sh installs both first.
        # ranges (the accepted versions); the tested pins are
        # requirements/runtime.txt, installed by tools/install.sh
        install_requires=parse_requirements('requirements/accepted.txt'),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'mim': parse_requirements('requirements/mminstall.txt'),
        },
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
    )
