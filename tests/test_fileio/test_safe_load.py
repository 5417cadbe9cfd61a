# Copyright (c) mmvfm contributors. All rights reserved.
"""mmvfm.fileio.safe_load and mmengine's checkpoint schemes through it: a
code-running pickle is refused by every scheme (nothing runs, the message
names the file and never advises weights_only=False), broken files get
their own message, good checkpoints (mmengine's training state included)
load."""

import os
import pickle
import shutil
import socket
import zipfile

import numpy as np
import pytest
import torch

from mmvfm.fileio import (
    CorruptCheckpointError,
    TorchScriptArchiveError,
    UnsafeCheckpointError,
    safe_load,
)


class Evil:
    """Unpickling runs ``touch MARKER`` (the probe of the issue)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def write_evil(path, marker, legacy=False) -> str:
    torch.save(
        {'meta': {'x': Evil(marker)}, 'state_dict': {'w': Evil(marker)}},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    return str(path)


def assert_refused_and_named(excinfo, name, marker) -> None:
    message = str(excinfo.value)
    assert not os.path.exists(marker), 'the pickle ran its code'
    assert name in message
    assert 'weights_only=False' not in message
    assert 'weights_only' not in message.replace('weights-only', '')


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / 'PWNED'
    return write_evil(tmp_path / 'evil.pth', marker), str(marker)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError('a test tried to reach the network')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


# ------------------------------------------------------------ the loader
@pytest.mark.parametrize('legacy', [False, True])
def test_code_running_pickle_is_refused(tmp_path, legacy):
    marker = tmp_path / 'PWNED'
    path = write_evil(tmp_path / 'evil.pth', marker, legacy=legacy)
    with pytest.raises(UnsafeCheckpointError, match='could run code') as e:
        safe_load(path)
    assert_refused_and_named(e, path, marker)
    assert 'posix.system' in str(e.value) or 'system' in str(e.value)
    assert 'was not loaded' in str(e.value) or 'not loaded' in str(e.value)


def test_good_checkpoints_load(tmp_path):
    from mmengine.logging import HistoryBuffer

    buf = HistoryBuffer()
    buf.update(2.5)
    ckpt = dict(
        meta=dict(seed=np.int64(3), lr=np.float64(0.1), cfg='x = 1'),
        message_hub=dict(log_scalars={'loss': buf}),
        state_dict={'w': torch.arange(3.0)},
        optimizer={'state': {}, 'param_groups': [{'lr': 0.1}]},
    )
    for legacy in (False, True):
        path = tmp_path / f'good_{legacy}.pth'
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
        loaded = safe_load(str(path), 'cpu')
        assert torch.equal(loaded['state_dict']['w'], torch.arange(3.0))
        assert loaded['message_hub']['log_scalars']['loss'].current() == 2.5
        assert loaded['meta']['seed'] == 3


def _truncated(tmp_path, legacy):
    good = tmp_path / f'good_{legacy}.pth'
    torch.save(
        {'state_dict': {'w': torch.ones(64)}},
        good,
        _use_new_zipfile_serialization=not legacy,
    )
    data = good.read_bytes()
    path = tmp_path / f'truncated_{legacy}.pth'
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    'kind, match',
    [
        ('empty', 'is empty \\(0 bytes\\)'),
        ('random', 'not a checkpoint torch can read'),
        ('truncated_zip', 'not a complete checkpoint'),
        ('truncated_legacy', 'not a checkpoint torch can read'),
        ('plain_pickle', 'not a checkpoint torch can read'),
    ],
)
def test_broken_files_have_their_own_message(tmp_path, kind, match):
    path = tmp_path / f'{kind}.pth'
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'random':
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == 'truncated_zip':
        path = _truncated(tmp_path, legacy=False)
    elif kind == 'truncated_legacy':
        path = _truncated(tmp_path, legacy=True)
    else:  # results dumped by tools/test.py --out are plain pickles
        with open(path, 'wb') as f:
            pickle.dump([{'a': 1}], f)
    with pytest.raises(CorruptCheckpointError, match=match) as e:
        safe_load(str(path))
    assert str(path) in str(e.value)
    assert 'weights_only' not in str(e.value)
    assert not isinstance(e.value, UnsafeCheckpointError)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match='"nope.pth" does not exist'):
        safe_load('nope.pth')
    with pytest.raises(FileNotFoundError, match='checkpoint path is empty'):
        safe_load('')
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        safe_load(str(tmp_path))


def test_torchscript_archive_has_its_own_error(tmp_path):
    path = str(tmp_path / 'scripted.pt')
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(TorchScriptArchiveError, match='torch.jit.load'):
        safe_load(path)


def test_allow_unsafe_is_explicit_and_warns(tmp_path):
    path = str(tmp_path / 'namespace.pth')
    import argparse

    torch.save({'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        safe_load(path)
    with pytest.warns(UserWarning, match='full unpickling'):
        assert safe_load(path, allow_unsafe=True)['args'].lr == 0.1


def test_a_non_content_error_keeps_its_own_message(tmp_path, monkeypatch):
    """A RuntimeError that is not about the file (e.g. CUDA tensors
    without CUDA) is not reported as a broken checkpoint."""
    path = str(tmp_path / 'good.pth')
    torch.save({'w': torch.ones(1)}, path)

    def fail(*args, **kwargs):
        raise RuntimeError('Attempting to deserialize object on a CUDA device')

    monkeypatch.setattr(torch, 'load', fail)
    with pytest.raises(RuntimeError, match='CUDA device') as e:
        safe_load(path)
    assert not isinstance(e.value, CorruptCheckpointError)


# ------------------------------------------------- mmengine's schemes
def _seed_hub_cache(monkeypatch, tmp_path, url, src) -> str:
    """Put ``src`` where torch.hub caches ``url``: mmengine's loaders read
    it from there instead of downloading."""
    torch_home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True, exist_ok=True)
    dst = cache / os.path.basename(url.split('?')[0])
    shutil.copy(src, dst)
    return str(dst)


def _scheme_urls():
    """(checkpoint path, the URL it resolves to) for every scheme."""
    from mmengine.runner.checkpoint import (
        get_external_models,
        get_mmcls_models,
        get_torchvision_models,
    )

    tv = get_torchvision_models()
    mmcls = get_mmcls_models()
    external = get_external_models()
    ext_name = next(k for k, v in external.items() if v.startswith('https://'))
    return [
        ('https://example.com/ckpts/evil.pth', None),
        ('http://example.com/ckpts/evil.pth', None),
        ('torchvision://resnet50', tv['resnet50']),
        ('modelzoo://resnet50', tv['resnet50']),
        (f'open-mmlab://{ext_name}', external[ext_name]),
        (f'openmmlab://{ext_name}', external[ext_name]),
        ('mmcls://resnet50', mmcls['resnet50']),
    ]


@pytest.mark.parametrize('index', range(7))
def test_every_url_scheme_refuses_a_poisoned_cache(
    tmp_path, monkeypatch, evil, no_network, index
):
    from mmengine.runner.checkpoint import CheckpointLoader

    path, marker = evil
    name, url = _scheme_urls()[index]
    cached = _seed_hub_cache(monkeypatch, tmp_path, url or name, path)
    with pytest.raises(UnsafeCheckpointError, match='could run code') as e:
        CheckpointLoader.load_checkpoint(name, map_location='cpu')
    assert_refused_and_named(e, cached, marker)


def test_url_scheme_loads_a_good_cached_file(
    tmp_path, monkeypatch, no_network
):
    from mmengine.runner.checkpoint import CheckpointLoader

    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, good)
    url = 'https://example.com/ckpts/good-12345678.pth'
    _seed_hub_cache(monkeypatch, tmp_path, url, good)
    loaded = CheckpointLoader.load_checkpoint(url, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


def test_legacy_zip_in_the_hub_cache_is_refused_too(
    tmp_path, monkeypatch, evil, no_network
):
    """torch.hub's hand-zipped pre-1.6 format is extracted, then loaded
    weights-only."""
    from mmengine.runner.checkpoint import CheckpointLoader

    path, marker = evil
    legacy = write_evil(tmp_path / 'inner.pth', marker, legacy=True)
    zipped = tmp_path / 'zipped.pth'
    with zipfile.ZipFile(zipped, 'w') as archive:
        archive.write(legacy, 'inner.pth')
    url = 'https://example.com/ckpts/zipped.pth'
    _seed_hub_cache(monkeypatch, tmp_path, url, zipped)
    with pytest.raises(UnsafeCheckpointError) as e:
        CheckpointLoader.load_checkpoint(url)
    assert_refused_and_named(e, 'inner.pth', marker)


def test_local_scheme_and_mmengine_load_checkpoint(tmp_path, evil):
    from mmengine.runner.checkpoint import (
        CheckpointLoader,
        _load_checkpoint,
        load_checkpoint,
    )

    path, marker = evil
    for load in (
        lambda: CheckpointLoader.load_checkpoint(path),
        lambda: _load_checkpoint(path),
        lambda: load_checkpoint(torch.nn.Linear(1, 1), path),
    ):
        with pytest.raises(UnsafeCheckpointError) as e:
            load()
        assert_refused_and_named(e, path, marker)


def test_every_scheme_mmengine_ships_is_ours():
    from mmengine.runner.checkpoint import CheckpointLoader

    from mmvfm.fileio import checkpoint_loaders

    ours = {fn for _, fn in checkpoint_loaders.SCHEMES}
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader in ours, f'{prefix!r} is loaded by {loader}'
