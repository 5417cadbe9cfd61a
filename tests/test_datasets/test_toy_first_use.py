# Copyright (c) mmvfm contributors. All rights reserved.
"""The toy set generated on first use: only an absent folder, only for
ToyCocoDataset, with the config's generator arguments, one writer."""

import os
import os.path as osp
import threading

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmvfm.datasets import (
    ToyCocoDataset,
    ensure_toy_coco,
    prepare_toy_data,
    verify_toy_coco,
)

TINY = dict(num_train=4, num_val=2, img_size=(48, 56), num_captions=1)


def _messages(capsys) -> str:
    out = capsys.readouterr()
    return out.out + out.err


def test_absent_folder_generated_once_with_a_log_line(tmp_path, capsys):
    MMLogger.get_instance('test_toy_first_use')
    root = str(tmp_path / 'toy')
    assert ensure_toy_coco(root, dict(TINY, seed=3))
    log = _messages(capsys)
    assert f'{root} does not exist; generating it there on first use' in log
    assert 'generate_toy_coco.py' in log and '--num-train 4' in log
    assert '--seed 3' in log
    assert verify_toy_coco(root)['train']['images'] == 4
    # no temporary folder left beside it
    assert os.listdir(tmp_path) == ['toy']
    mtime = os.stat(osp.join(root, 'annotations/instances_val.json')).st_mtime
    assert not ensure_toy_coco(root, TINY)
    stat = os.stat(osp.join(root, 'annotations/instances_val.json'))
    assert stat.st_mtime == mtime


def test_two_independent_jobs_racing_keep_the_first_copy(
    tmp_path, monkeypatch, capsys
):
    """Two single-process jobs (no process group) start on an absent set:
    the one that renames second keeps the first copy and leaves no
    temporary folder."""
    from mmvfm.datasets.toy_coco import first_use

    MMLogger.get_instance('test_toy_first_use_race')
    root = str(tmp_path / 'toy')
    real = first_use.generate_toy_coco

    def generate_while_another_job_finishes(out, **kwargs):
        real(out, **kwargs)
        if not osp.isdir(root):  # the other job renames its copy first
            real(root, **kwargs)

    monkeypatch.setattr(
        first_use, 'generate_toy_coco', generate_while_another_job_finishes
    )
    assert ensure_toy_coco(root, TINY)
    assert 'another process wrote' in _messages(capsys)
    assert os.listdir(tmp_path) == ['toy']
    assert verify_toy_coco(root)['val']['images'] == 2


def test_dataset_generates_its_absent_folder(tmp_path):
    root = str(tmp_path / 'toy')
    ds = ToyCocoDataset(
        data_root=root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=[],
        generator=TINY,
    )
    assert len(ds) == 2
    assert osp.isfile(ds[0]['img_path'])


def test_existing_broken_folder_keeps_the_error(tmp_path):
    (tmp_path / 'annotations').mkdir()
    with pytest.raises(FileNotFoundError, match='generate_toy_coco.py'):
        ToyCocoDataset(
            data_root=str(tmp_path),
            ann_file='annotations/instances_train.json',
            pipeline=[],
        )
    assert os.listdir(tmp_path / 'annotations') == []


def test_unknown_generator_argument_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="ToyCocoDataset.generator.*'count'"):
        ToyCocoDataset(
            data_root=str(tmp_path / 'toy'),
            ann_file='annotations/instances_train.json',
            pipeline=[],
            generator=dict(count=3),
        )
    assert not osp.exists(tmp_path / 'toy')


def _cfg(root, other_root, generator=TINY, val_generator=TINY):
    toy = dict(
        type='ToyCocoDataset',
        data_root=root,
        ann_file='annotations/instances_train.json',
        generator=generator,
    )
    return Config(
        dict(
            train_dataloader=dict(
                det=dict(dataset=dict(type='RepeatDataset', dataset=toy)),
                cls=dict(
                    dataset=dict(
                        type='CocoDataset',
                        data_root=other_root,
                        ann_file='annotations/x.json',
                    )
                ),
            ),
            val_dataloader=dict(
                dataset=dict(toy, generator=val_generator, test_mode=True)
            ),
        )
    )


def test_prepare_generates_toy_roots_only(tmp_path):
    root, coco = str(tmp_path / 'toy'), str(tmp_path / 'coco')
    assert prepare_toy_data(_cfg(root, coco)) == [root]
    assert osp.isdir(root) and not osp.exists(coco)
    assert prepare_toy_data(_cfg(root, coco)) == []


def test_prepare_trains_the_toy_tokenizer_only(tmp_path, capsys):
    """A BPETokenizer file directly in a toy set is trained from its
    captions at the config's vocab_size; one elsewhere is left alone (the
    tokenizer's own error names it at build time)."""
    from mmvfm.models.language import BPETokenizer

    MMLogger.get_instance('test_toy_first_use_tokenizer')
    root, coco = str(tmp_path / 'toy'), str(tmp_path / 'coco')
    cfg = _cfg(root, coco)
    tok = osp.join(root, 'tokenizer.json')
    elsewhere = osp.join(coco, 'tokenizer.json')
    cfg.model = dict(
        type='X',
        text=dict(type='BPETokenizer', file=tok, vocab_size=300),
        heads=[
            dict(tokenizer=dict(type='mmvfm.BPETokenizer', file=elsewhere))
        ],
    )
    assert prepare_toy_data(cfg) == [root, tok]
    log = _messages(capsys)
    assert f'{tok} does not exist; training it there on first use' in log
    assert 'train_tokenizer.py' in log and '--vocab-size 300' in log
    assert BPETokenizer(tok, vocab_size=300).vocab_size == 300
    assert not osp.exists(elsewhere)
    assert not [f for f in os.listdir(root) if 'partial' in f]
    assert prepare_toy_data(cfg) == []  # nothing is trained twice


def test_prepare_refuses_two_generators_for_one_root(tmp_path):
    cfg = _cfg(str(tmp_path / 'toy'), 'x', val_generator=dict(TINY, seed=1))
    with pytest.raises(
        ValueError, match=r'val_dataloader.dataset.generator .*differs'
    ):
        prepare_toy_data(cfg)
    assert not osp.exists(tmp_path / 'toy')


def test_other_ranks_wait_for_rank_0(tmp_path, monkeypatch):
    """Without a process group (torchrun's ranks before the runner starts
    it), a rank other than 0 writes nothing and waits for the folder."""
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    root = str(tmp_path / 'toy')
    timer = threading.Timer(0.5, os.makedirs, args=(root,))
    timer.start()
    assert ensure_toy_coco(root, TINY, wait_s=60)
    timer.join()
    assert os.listdir(root) == []  # rank 1 wrote nothing
    with pytest.raises(TimeoutError, match='rank 1: waited 1 s'):
        ensure_toy_coco(str(tmp_path / 'never'), TINY, wait_s=1)


# ------------------------------------------ every toy config, first use
def _toy_configs():
    from conftest import ALL_CONFIGS

    return [p for p in ALL_CONFIGS if 'toy' in osp.basename(p)]


def _leaf_datasets(cfg):
    from mmvfm.utils.data_check import dataset_cfgs, named_loaders

    for loader_field in (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
    ):
        for field, loader in named_loaders(cfg, loader_field):
            for name, ds in dataset_cfgs(
                loader.get('dataset'), f'{field}.dataset'
            ):
                if 'dataset' not in ds and 'datasets' not in ds:
                    yield name, ds


def test_every_toy_config_reads_toy_dataset_types_only():
    """Each dataset of each toy config generates the toy set on first use
    (a toy type), and its tokenizer lies in the toy set (trained on first
    use)."""
    from mmvfm.datasets import TOY_DATASET_TYPES
    from mmvfm.datasets.toy_coco.first_use import _tokenizers

    configs = _toy_configs()
    assert len(configs) >= 25
    for path in configs:
        cfg = Config.fromfile(path)
        datasets = list(_leaf_datasets(cfg))
        assert datasets, path
        roots = set()
        for field, ds in datasets:
            kind = str(ds.get('type')).split('.')[-1]
            assert kind in TOY_DATASET_TYPES, f'{path}: {field} is {kind}'
            roots.add(osp.normpath(ds['data_root']))
        for field, tok in _tokenizers(cfg.get('model')):
            assert osp.normpath(osp.dirname(tok['file'])) in roots, (
                f'{path}: {field}.file {tok["file"]} is not in a toy set'
            )


def test_every_toy_dataset_type_builds_from_an_absent_folder(
    tmp_path, monkeypatch
):
    """One config with all three toy types and a tokenizer (Uni-Perceiver
    v2's five tasks), pointed at an absent folder, sockets blocked:
    prepare_toy_data writes the set and the tokenizer, and every dataset
    builds."""
    import socket

    from mmdet.registry import DATASETS

    from mmvfm.datasets.toy_coco.first_use import _tokenizers

    def refuse(*args, **kwargs):
        raise AssertionError('first use reached for the network')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    path = [p for p in _toy_configs() if 'five-tasks_1xb32' in p][0]
    cfg = Config.fromfile(path)
    root = str(tmp_path / 'toy') + '/'
    kinds = set()
    for _, ds in _leaf_datasets(cfg):
        ds['data_root'] = root
        ds['generator'] = TINY
        kinds.add(str(ds['type']).split('.')[-1])
    assert kinds == {
        'ToyCocoDataset',
        'ToyCocoCaptionsDataset',
        'ToyClassificationDataset',
    }
    tok_file = root + 'tokenizer.json'
    for _, tok in _tokenizers(cfg.model):
        tok['file'] = tok_file
    written = prepare_toy_data(cfg)
    assert osp.normpath(root) in written and tok_file in written
    for field, ds in _leaf_datasets(cfg):
        ds = dict(ds, pipeline=[])
        built = DATASETS.build(ds)
        assert len(built) > 0, field
