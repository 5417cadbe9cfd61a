# Copyright (c) mmvfm contributors. All rights reserved.
"""Generate the toy set (and a toy config's tokenizer) on first use: the
README's first run is one command (``python tools/train.py <toy config>``).

Only a *missing folder* is generated, and only for the toy dataset types
(:data:`TOY_DATASET_TYPES`: detection, captions, classification; their
``generator`` dict holds :func:`generate_toy_coco`'s arguments; empty: its
defaults): a folder that exists but lacks a file still gets the clear
error that says how to regenerate it, and any other dataset (COCO itself,
a captions or classification file of a real set) is never written. One
process generates (rank 0), into a temporary folder renamed into place
when complete, so a crash never leaves a half-written set; the others
wait (a barrier when the process group is up, else -- ranks
launched by ``torchrun`` before the runner starts the group -- until the
folder appears).
"""

import inspect
import os
import os.path as osp
import shutil
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.logging import print_log

from ...utils.data_check import dataset_cfgs, named_loaders
from .common import _REGEN_HINT
from .writing import generate_toy_coco

__all__ = [
    'TOY_DATASET_TYPES',
    'ensure_toy_coco',
    'ensure_toy_tokenizer',
    'prepare_toy_data',
    'toy_generator_args',
]

# the dataset types that generate the toy set on first use (each mixes in
# ToyFirstUseMixin); a config names them with or without a scope prefix
TOY_DATASET_TYPES = (
    'ToyCocoDataset',
    'ToyCocoCaptionsDataset',
    'ToyClassificationDataset',
)
# how long the other ranks wait for rank 0's set (the default set: ~40 s)
WAIT_S = 30 * 60
# generate_toy_coco's arguments a config may set (not where or how)
_ARGS = tuple(
    p
    for p in inspect.signature(generate_toy_coco).parameters
    if p not in ('out_dir', 'overwrite', 'progress')
)


def toy_generator_args(generator: Optional[dict], field: str) -> dict:
    """``generator`` checked against :func:`generate_toy_coco`'s arguments.

    Raises:
        ValueError: naming ``field`` and the unknown key.
    """
    args = dict(generator or {})
    for key in args:
        if key not in _ARGS:
            raise ValueError(
                f'{field}: unknown toy generator argument {key!r} '
                f'(generate_toy_coco takes {", ".join(_ARGS)})'
            )
    return args


def _command(data_root: str, args: dict) -> str:
    """The command line that makes the same set."""
    parts = [_REGEN_HINT, data_root.rstrip('/')]
    for key, value in args.items():
        flag = '--' + key.replace('_', '-')
        if isinstance(value, (list, tuple)):
            value = ' '.join(str(v) for v in value)
        parts.append(f'{flag} {value}')
    return ' '.join(parts)


def _rank_world() -> Tuple[int, int, bool]:
    """(rank, world size, process group up): from the group when it is
    initialised, else from torchrun's environment."""
    from mmengine.dist import get_dist_info, is_distributed

    if is_distributed():
        rank, world = get_dist_info()
        return rank, world, True
    return (
        int(os.environ.get('RANK', 0)),
        int(os.environ.get('WORLD_SIZE', 1)),
        False,
    )


def _remove(path: str) -> None:
    if osp.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.exists(path):
        os.remove(path)


def _write_once(
    target: str,
    exists: Callable[[str], bool],
    write: Callable[[str], None],
    doing: str,
    command: str,
    wait_s: float,
) -> bool:
    """Rank 0 writes ``target`` (a folder or a file) through a temporary
    path renamed into place; the other ranks wait for it (a barrier when
    the process group is up, else until ``exists(target)``).

    Returns:
        bool: whether ``target`` was absent (and is now written).
    """
    if exists(target):
        return False
    target = target.rstrip('/')
    rank, world, grouped = _rank_world()
    if rank == 0:
        print_log(
            f'toy set: {target} does not exist; {doing} it there on first '
            f'use, as `{command}` would',
            logger='current',
        )
        start = time.perf_counter()
        tmp = f'{target}.partial-{os.getpid()}'
        _remove(tmp)
        write(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another independent job (e.g. a second seed-sweep run started
            # at the same moment) renamed its copy first: keep that one.
            if not exists(target):
                raise
            _remove(tmp)
            print_log(
                f'toy set: another process wrote {target} first; using that '
                'copy',
                logger='current',
            )
        else:
            print_log(
                f'toy set: {target} written in '
                f'{time.perf_counter() - start:.0f} s',
                logger='current',
            )
    if grouped:
        from mmengine.dist import barrier

        barrier()
    elif world > 1 and rank != 0:
        deadline = time.monotonic() + wait_s
        while not exists(target):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'rank {rank}: waited {wait_s:.0f} s for rank 0 to '
                    f'write {target}'
                )
            time.sleep(1.0)
    return True


def ensure_toy_coco(
    data_root: str, generator: Optional[dict] = None, wait_s: float = WAIT_S
) -> bool:
    """Generate the toy set at ``data_root`` if that folder is absent.

    Args:
        data_root: the toy set's folder.
        generator: :func:`generate_toy_coco` arguments (default: its own).
        wait_s: how long a rank other than 0 waits for the set without a
            process group.

    Returns:
        bool: whether the folder was absent (and is now generated).
    """
    if osp.isdir(data_root):
        return False
    args = toy_generator_args(generator, 'generator')
    return _write_once(
        data_root,
        osp.isdir,
        lambda tmp: generate_toy_coco(tmp, overwrite=True, **args),
        'generating',
        _command(data_root, args),
        wait_s,
    )


def ensure_toy_tokenizer(
    file: str, data_root: str, vocab_size: int = 512, wait_s: float = WAIT_S
) -> bool:
    """Train the BPE tokenizer ``file`` from the toy set's training captions
    if that file is absent, as ``tools/misc/train_tokenizer.py`` would.

    Args:
        file: the tokenizer file (a config's ``BPETokenizer.file``).
        data_root: the toy set it is trained from.
        vocab_size: the config's (the tool's default: 512).
        wait_s: as :func:`ensure_toy_coco`.

    Returns:
        bool: whether the file was absent (and is now trained).
    """
    from mmvfm.models.language import coco_captions, train_bpe

    captions = osp.join(data_root, 'annotations', 'captions_train.json')
    command = (
        f'python tools/misc/train_tokenizer.py {captions} {file} '
        f'--vocab-size {vocab_size}'
    )
    return _write_once(
        file,
        osp.isfile,
        lambda tmp: train_bpe(coco_captions(captions), tmp, vocab_size),
        'training',
        command,
        wait_s,
    )


def _tokenizers(node, field: str = 'model') -> Iterator[Tuple[str, dict]]:
    """``(field, config)`` of every ``BPETokenizer`` dict under ``node``."""
    if isinstance(node, dict):
        if str(node.get('type', '')).split('.')[-1] == 'BPETokenizer':
            yield field, node
        for key, value in node.items():
            yield from _tokenizers(value, f'{field}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _tokenizers(value, f'{field}[{i}]')


def _toy_datasets(cfg, fields: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    """``(field, dataset config)`` of every toy dataset in the
    config's dataloaders ``fields`` (one per task of a multi-task config,
    wrapped ones included)."""
    for loader_field in fields:
        named = named_loaders(cfg, loader_field)
        for field, loader in named:
            for name, ds in dataset_cfgs(
                loader.get('dataset'), f'{field}.dataset'
            ):
                kind = str(ds.get('type', '')).split('.')[-1]
                if kind in TOY_DATASET_TYPES:
                    yield name, ds


def prepare_toy_data(
    cfg,
    loaders: Sequence[str] = (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
    ),
) -> List[str]:
    """Generate, once each, the absent toy-set folders of the toy
    datasets of a config's dataloaders ``loaders``
    (:func:`ensure_toy_coco`), before its paths are checked.

    A ``BPETokenizer`` of the model whose ``file`` lies directly in one
    of these folders is trained from its training captions when absent
    (:func:`ensure_toy_tokenizer`).

    Returns:
        list[str]: the folders generated and tokenizer files trained.

    Raises:
        ValueError: two datasets of one folder with different
            ``generator`` arguments, or an unknown argument (naming the
            field).
    """
    roots: Dict[str, Tuple[str, dict]] = {}
    for field, ds in _toy_datasets(cfg, loaders):
        root = ds.get('data_root')
        if not root or '://' in str(root):
            continue
        args = toy_generator_args(ds.get('generator'), f'{field}.generator')
        key = osp.normpath(root)
        if key in roots and roots[key][1] != args:
            raise ValueError(
                f'{field}.generator {args} differs from '
                f'{roots[key][0]}.generator {roots[key][1]} for the same '
                f'toy set {root}'
            )
        roots.setdefault(key, (field, args))
    written = [
        root
        for root, (_, args) in roots.items()
        if ensure_toy_coco(root, args)
    ]
    # a BPETokenizer file directly in one of these toy sets is trained from
    # its captions when absent; any other tokenizer file keeps its error
    for _, tok in _tokenizers(cfg.get('model')):
        file = tok.get('file')
        if not isinstance(file, str) or '://' in file:
            continue
        root = osp.normpath(osp.dirname(file))
        if root in roots and ensure_toy_tokenizer(
            file, root, tok.get('vocab_size') or 512
        ):
            written.append(file)
    return written
