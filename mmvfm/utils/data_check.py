# Copyright (c) mmvfm contributors. All rights reserved.
"""Check a config's dataset paths before a run starts.

Without this, a missing dataset surfaces deep inside pycocotools after the
model is built; here the error names the config field and the path.
"""

import os.path as osp
from typing import Iterator, List, Sequence, Tuple

TOY_HINT = (
    'Generate the toy set with: '
    'python tools/dataset_converters/generate_toy_coco.py {root}'
)


def dataset_cfgs(cfg, prefix: str) -> Iterator[Tuple[str, dict]]:
    """Yield ``(field, dataset_cfg)`` for a dataset and its wrapped ones."""
    if not isinstance(cfg, dict):
        return
    yield prefix, cfg
    if isinstance(cfg.get('dataset'), dict):  # RepeatDataset & co.
        yield from dataset_cfgs(cfg['dataset'], f'{prefix}.dataset')
    for i, sub in enumerate(cfg.get('datasets') or []):  # ConcatDataset
        yield from dataset_cfgs(sub, f'{prefix}.datasets[{i}]')


def _is_local(path: str) -> bool:
    return '://' not in path


def named_loaders(cfg, field: str) -> List[Tuple[str, dict]]:
    """``(field, loader config)`` of a config's dataloader ``field``: the
    loader itself, or one per task of a multi-task config
    (``dict(task=loader, ...)``: field ``'<field>.<task>'``); none when the
    field is absent."""
    loaders = cfg.get(field) if hasattr(cfg, 'get') else None
    if not isinstance(loaders, dict):
        return []
    if 'dataset' in loaders:
        return [(field, loaders)]
    return [
        (f'{field}.{task}', loader)
        for task, loader in loaders.items()
        if isinstance(loader, dict)
    ]


def check_data_paths(
    cfg,
    loaders: Sequence[str] = (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
    ),
) -> List[str]:
    """Check that ``data_root`` and ``ann_file`` of each dataloader exist.

    Args:
        cfg (Config | dict): the full config.
        loaders: names of the dataloader fields to check (each task's
            loader of a multi-task config); absent or ``None`` fields are
            skipped.

    Returns:
        list[str]: the checked annotation files.

    Raises:
        FileNotFoundError: naming the config field and the missing path
            (with the generation command when it is the toy set).
    """
    checked = []
    named = [pair for loader in loaders for pair in named_loaders(cfg, loader)]
    for loader, loader_cfg in named:
        for field, ds in dataset_cfgs(
            loader_cfg.get('dataset'), f'{loader}.dataset'
        ):
            root = ds.get('data_root') or ''
            ann_file = ds.get('ann_file') or ''
            is_toy = (
                'toy' in str(ds.get('type', '')).lower()
                or 'toy' in str(root).lower()
            )
            hint = (
                '\n' + TOY_HINT.format(root=root or '<data_root>')
                if is_toy
                else ''
            )
            if root and _is_local(root) and not osp.isdir(root):
                raise FileNotFoundError(
                    f'{field}.data_root: dataset folder "{root}" does not '
                    f'exist (relative to "{osp.abspath(".")}").{hint}'
                )
            if not ann_file or not _is_local(ann_file):
                continue
            path = (
                ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
            )
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'{field}.ann_file: annotation file "{path}" does not '
                    f'exist.{hint}'
                )
            checked.append(path)
    return checked
