# Copyright (c) mmvfm contributors. All rights reserved.
"""mmvfm's version and the versions of the stack it needs.

The stack is read from package metadata, so a check does not import (and
half-initialise) the package it checks, and this module imports nothing
but the standard library.
"""

from importlib import metadata
from typing import Callable, Dict, Optional, Tuple

__version__ = '0.1.0'


# name: (minimum inclusive, maximum exclusive, how to install the tested pin)
REQUIRED_VERSIONS: Dict[str, Tuple[str, str, str]] = {
    # 2.14 needs mmcv's ops rebuilt with -std=c++20; tested: 2.13.0.
    'torch': ('2.0.0', '2.14.0', 'pip install torch==2.13.0'),
    # the range mmdet 3.3 accepts; tested: 2.1.0 with compiled ops.
    'mmcv': (
        '2.0.0rc4',
        '2.2.0',
        'pip install --no-build-isolation mmcv==2.1.0 '
        '(or run `bash tools/install.sh`)',
    ),
    'mmengine': ('0.10.0', '1.0.0', 'pip install mmengine==0.10.7'),
    'mmdet': ('3.3.0', '3.4.0', 'pip install mmdet==3.3.0'),
    'mmpretrain': ('1.2.0', '1.3.0', 'pip install mmpretrain==1.2.0'),
}


def digit_version(version: str) -> tuple:
    """Turn a version string into a comparable tuple.

    ``'2.13.0+cpu'`` -> ``(2, 13, 0, 0, 0)``; pre-releases sort before the
    release: ``'2.0.0rc4'`` -> ``(2, 0, 0, -1, 4)``.
    """
    version = version.split('+')[0]
    release, pre = version, (0, 0)
    for tag, rank in (('rc', -1), ('b', -2), ('a', -3)):
        if tag in version:
            release, _, num = version.partition(tag)
            pre = (rank, int(''.join(c for c in num if c.isdigit()) or 0))
            break
    parts = [
        int(''.join(c for c in p if c.isdigit()) or 0)
        for p in release.rstrip('.').split('.')
    ]
    parts = (parts + [0, 0, 0])[:3]
    return (*parts, *pre)


def _installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions(
    get_version: Callable[[str], Optional[str]] = _installed_version,
) -> Dict[str, str]:
    """Check that min <= installed < max for every package of the stack.

    Args:
        get_version: returns the installed version of a distribution or
            None when it is not installed (injectable for tests).

    Returns:
        dict: package name -> installed version.

    Raises:
        ImportError: naming every missing or incompatible package with the
            installed version, the accepted range and the command to fix it.
    """
    found, problems = {}, []
    for name, (low, high, fix) in REQUIRED_VERSIONS.items():
        version = get_version(name)
        if version is None:
            problems.append(
                f'{name} is not installed; mmvfm needs '
                f'{name}>={low},<{high}: {fix}'
            )
            continue
        found[name] = version
        if (
            not digit_version(low)
            <= digit_version(version)
            < digit_version(high)
        ):
            problems.append(
                f'{name}=={version} is installed, but mmvfm '
                f'needs {name}>={low},<{high}: {fix}'
            )
    if problems:
        raise ImportError(
            'Incompatible OpenMMLab stack for mmvfm:\n  '
            + '\n  '.join(problems)
            + '\nThe tested stack is installed by '
            '`bash tools/install.sh`.'
        )
    return found


version_info = digit_version(__version__)[:3]
