# Copyright (c) mmvfm contributors. All rights reserved.
"""mmengine's checkpoint URL schemes, each through :func:`safe_load`.

mmengine 0.10.7 resolves ``load_from``, ``--resume``, ``init_cfg=dict(
type='Pretrained', checkpoint=...)`` and a distiller's teacher checkpoint
through ``CheckpointLoader``, whose loaders for ``http(s)://``,
``torchvision://`` / ``modelzoo://``, ``open-mmlab://`` and ``mmcls://`` go
through ``torch.hub.load_state_dict_from_url``. Its default is
``weights_only=False``: a poisoned file in the hub cache (or at the URL)
runs its code. :func:`register_safe_checkpoint_loaders` re-registers every
scheme mmengine ships (``force=True``) with loaders that behave as
mmengine's (the same cache folder ``$TORCH_HOME/hub/checkpoints``, the same
file names, rank 0 downloads first, mmengine's model-name tables) but load
the file with :func:`safe_load`.
"""

import os
import os.path as osp
import sys
import zipfile
from typing import Any, Optional
from urllib.parse import urlparse

import torch

from .safe_load import safe_load, safe_load_bytes

__all__ = [
    'download_to_cache',
    'load_from_ceph',
    'load_from_http',
    'load_from_local',
    'load_from_mmcls',
    'load_from_openmmlab',
    'load_from_pavi',
    'load_from_torchvision',
    'register_safe_checkpoint_loaders',
]


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """A local checkpoint file (mmengine's ``''`` scheme)."""
    return safe_load(filename, map_location)


def download_to_cache(
    url: str, model_dir: Optional[str] = None, progress: bool = True
) -> str:
    """The cached copy of ``url`` in ``model_dir`` (default
    ``torch.hub.get_dir()/checkpoints``, as torch.hub and mmengine), fetched
    when absent. ``download_url_to_file`` writes a temporary file and moves
    it into place, so an interrupted download leaves no partial file."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
        torch.hub.download_url_to_file(url, cached, None, progress=progress)
    return cached


def _load_cached(path: str, model_dir: str, map_location: Any, url: str):
    """torch.hub's legacy zip (one ``torch.save`` < 1.6 file zipped by
    hand) is extracted first, as ``torch.hub`` does."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) == 1 and not members[0].is_dir():
                # ZipFile.extract strips absolute and '..' components
                path = archive.extract(members[0], model_dir)
    return safe_load(path, map_location, source=f'{url} (cached as {path})')


def load_from_http(
    filename: str,
    map_location: Any = None,
    model_dir: Optional[str] = None,
    progress: bool = os.isatty(0),
) -> Any:
    """An ``http(s)://`` checkpoint: rank 0 downloads, the others wait."""
    from mmengine.dist import get_dist_info

    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    rank, world_size = get_dist_info()
    if rank == 0:
        path = download_to_cache(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = download_to_cache(filename, model_dir, progress)
    return _load_cached(path, model_dir, map_location, filename)


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (``modelzoo://NAME`` deprecated), through
    mmengine's name table."""
    from mmengine.runner.checkpoint import get_torchvision_models

    prefix = 'modelzoo://' if filename.startswith('modelzoo://') else None
    name = filename[len(prefix or 'torchvision://') :]
    urls = get_torchvision_models()
    if name not in urls:
        raise KeyError(f'{filename}: no torchvision model named {name!r}')
    return load_from_http(urls[name], map_location=map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``, through mmengine's
    name table (a URL, or a path under mmengine's home)."""
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import (
        _get_mmengine_home,
        get_deprecated_model_names,
        get_external_models,
    )

    prefix = (
        'open-mmlab://'
        if filename.startswith('open-mmlab://')
        else 'openmmlab://'
    )
    name = filename[len(prefix) :]
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(
            f'{prefix}{name} is deprecated in favor of '
            f'{prefix}{deprecated[name]}',
            logger='current',
        )
        name = deprecated[name]
    urls = get_external_models()
    if name not in urls:
        raise KeyError(f'{filename}: no OpenMMLab model named {name!r}')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    return safe_load(osp.join(_get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``: mmengine's name table and key renaming."""
    from mmengine.runner.checkpoint import (
        _process_mmcls_checkpoint,
        get_mmcls_models,
    )

    name = filename[len('mmcls://') :]
    urls = get_mmcls_models()
    if name not in urls:
        raise KeyError(f'{filename}: no mmcls model named {name!r}')
    checkpoint = load_from_http(urls[name], map_location=map_location)
    return _process_mmcls_checkpoint(checkpoint)


def load_from_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://PATH`` (needs the ``pavi`` package)."""
    import tempfile

    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.'
        ) from None
    model = modelcloud.get(filename[len('pavi://') :])
    with tempfile.TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return safe_load(downloaded, map_location, source=filename)


def load_from_ceph(
    filename: str, map_location: Any = None, backend: str = 'petrel'
) -> Any:
    """``s3://`` / ``petrel://`` through mmengine's file backend."""
    from mmengine.fileio import get_file_backend

    file_backend = get_file_backend(
        filename, backend_args={'backend': backend}
    )
    return safe_load_bytes(
        file_backend.get(filename), map_location, source=filename
    )


# every scheme mmengine 0.10.7 registers, with its own prefixes
SCHEMES = (
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    ('pavi://', load_from_pavi),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
)


def register_safe_checkpoint_loaders() -> bool:
    """Register the loaders above for every scheme mmengine ships
    (``force=True``); idempotent. Returns whether anything changed."""
    from mmengine.runner.checkpoint import CheckpointLoader

    changed = False
    for prefixes, loader in SCHEMES:
        for prefix in (prefixes,) if isinstance(prefixes, str) else prefixes:
            if CheckpointLoader._schemes.get(prefix) is not loader:
                CheckpointLoader.register_scheme(prefix, loader, force=True)
                changed = True
    return changed
