# Copyright (c) mmvfm contributors. All rights reserved.
import os.path as osp
from typing import Optional

from mmengine.config import Config


def resolve_config_path(path: str) -> str:
    """Turn a config path into a file path, checking that it exists.

    Accepts a plain file path or an OpenMMLab package path such as
    ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'`` (a config shipped
    in the installed package's ``.mim/configs``).

    Raises:
        FileNotFoundError: naming the path (and the package folder searched
            for ``pkg::`` paths).
    """
    if '::' in path:
        package, _, rel = path.partition('::')
        try:
            from mmengine.utils import get_installed_path

            root = get_installed_path(package)
        except Exception as e:  # not installed
            raise FileNotFoundError(
                f'config "{path}": package "{package}" is not installed'
            ) from e
        resolved = osp.join(root, '.mim', 'configs', rel)
        if not osp.isfile(resolved):
            raise FileNotFoundError(
                f'config "{path}" does not exist (looked for {resolved})'
            )
        return resolved
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'config file "{path}" does not exist '
            f'(relative to "{osp.abspath(".")}")'
        )
    return path


def load_config(path: str) -> Config:
    """:meth:`Config.fromfile` with the path checks of
    :func:`resolve_config_path`."""
    return Config.fromfile(resolve_config_path(path))


def load_run_config(
    path: str,
    cfg_options: Optional[dict] = None,
    work_dir: Optional[str] = None,
    launcher: str = 'none',
) -> Config:
    """Load a config for a train/test run the way mmdet's tools do.

    Applies ``--cfg-options``, sets the launcher and the work dir (default:
    ``./work_dirs/<config name>``).

    Raises:
        SystemExit: with the message of :func:`resolve_config_path` when
            the config does not exist (tools print it without a traceback).
    """
    try:
        cfg = load_config(path)
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(path.split('::')[-1]))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


def drop_pretrained(cfg) -> None:
    """Set, in place, every ``init_cfg`` of type ``Pretrained`` in a model
    config (nested dicts and lists) to None, so the model builds and
    initialises without downloading weights (tests, benchmarks)."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            drop_pretrained(value)
