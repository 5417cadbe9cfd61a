# Copyright (c) mmvfm contributors. All rights reserved.
"""The stack fixes of mmvfm.compat, each against the failure it fixes."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mmvfm import compat


def run_python(code: str, env_extra=None, timeout=120):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_import_mmvfm_makes_mmdet_and_mmpretrain_models_importable():
    proc = run_python("""
        import mmvfm
        import mmdet.models, mmpretrain.models, torchvision
        import torch
        from mmpretrain.models import VisionTransformer
        vit = VisionTransformer(arch='deit-tiny', img_size=32, patch_size=16)
        out = vit(torch.rand(1, 3, 32, 32))
        print('shape', tuple(out[-1].shape))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'shape (1, 192)' in proc.stdout


def test_torchvision_schema_only_declared_when_its_ops_cannot_load():
    if compat._torchvision_extension_loads():
        # a torchvision matching torch: its own ops must be left alone
        assert 'fix_torchvision_ops' not in compat.apply_compat()
    else:
        assert 'fix_torchvision_ops' in compat.apply_compat()
    assert compat._op_schema_exists('torchvision::nms')
    assert compat._op_schema_exists('torchvision::qnms')
    # idempotent: a second call declares nothing
    assert compat.fix_torchvision_ops() is False


# Stands in for transformers>=4.56: the names mmdet and mmengine import
# exist; any other name (those mmpretrain's multimodal modules import)
# raises the TypeError that the real release causes there.
FAKE_TRANSFORMERS = """
    class AutoTokenizer: pass
    class BertConfig: pass
    class BertModel: pass
    class BertPreTrainedModel: pass
    class Adafactor: pass

    def __getattr__(name):
        raise TypeError(f'simulated transformers>=4.56 failure: {name}')
"""


def _fake_transformers(tmp_path, version):
    pkg = tmp_path / 'transformers'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(textwrap.dedent(FAKE_TRANSFORMERS))
    dist = tmp_path / f'transformers-{version}.dist-info'
    dist.mkdir()
    (dist / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n'
    )
    return {'PYTHONPATH': str(tmp_path)}


def test_multimodal_switched_off_beside_new_transformers(tmp_path):
    env = _fake_transformers(tmp_path, '4.57.1')
    # the failure: without mmvfm, mmpretrain imports transformers
    proc = run_python(
        """
        import torch
        lib = torch.library.Library('torchvision', 'FRAGMENT')
        for op in ('nms', 'qnms'):
            lib.define(f'{op}(Tensor dets, Tensor scores, '
                       'float iou_threshold) -> Tensor')
        import mmpretrain.models
    """,
        env,
    )
    assert proc.returncode != 0 and 'simulated' in proc.stderr
    # the fix
    proc = run_python(
        """
        import mmvfm
        import mmdet.models, mmpretrain.models
        from mmpretrain.utils import dependency
        print('multimodal', dependency.WITH_MULTIMODAL)
    """,
        env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'multimodal False' in proc.stdout


def test_multimodal_left_on_beside_older_transformers(tmp_path, monkeypatch):
    monkeypatch.setattr(compat, '_transformers_version', lambda: (4, 40))
    assert compat.fix_mmpretrain_multimodal() is False
    monkeypatch.setattr(compat, '_transformers_version', lambda: ())
    assert compat.fix_mmpretrain_multimodal() is False


def test_mmengine_checkpoint_loads_weights_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = dict(
        meta=dict(seed=np.int64(3), lr=np.float64(0.1), iter=2),
        message_hub=dict(log_scalars={'loss': buf}),
        state_dict={'w': torch.ones(2)},
    )
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    loaded = torch.load(path, map_location='cpu')  # weights_only default
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5
    assert loaded['meta']['seed'] == 3


def test_arbitrary_classes_are_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': os.system}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu')


def test_cpu_launcher_uses_gloo_and_skips_set_device(monkeypatch):
    calls = []

    def launch(backend, **kwargs):
        torch.cuda.set_device(0)  # AttributeError on a CPU torch
        calls.append(backend)

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    wrapped = compat._cpu_launcher(launch)
    with pytest.warns(UserWarning, match='gloo'):
        wrapped('nccl')
    assert calls == ['gloo']
    # set_device is restored afterwards
    assert torch.cuda.set_device is not None
    assert getattr(torch.cuda.set_device, '__name__', '') == 'set_device'


def test_fix_cpu_distributed_is_idempotent():
    from mmengine.dist import utils as dist_utils

    compat.fix_cpu_distributed()
    assert compat.fix_cpu_distributed() is False
    assert dist_utils._init_dist_pytorch._mmvfm_cpu


def test_checkpoint_getattr_is_restricted(tmp_path):
    """A pickled ``getattr`` resolves HistoryBuffer's methods only."""
    from mmengine.logging import HistoryBuffer

    class Evil:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'evil_getattr.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        torch.load(path, map_location='cpu')
