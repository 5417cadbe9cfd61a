# Copyright (c) mmvfm contributors. All rights reserved.
"""The code-running pickle of the reliability issue, fed to every entry
point that reads a checkpoint-like file: each tool and config field. Each
case asserts that nothing ran and that the message names the file. Also:
no ``torch.load`` (or another unpickler) in the package or the tools
bypasses :func:`mmvfm.fileio.safe_load`."""

import ast
import glob
import os
import os.path as osp
import shutil

import pytest
import torch
from conftest import REPO_ROOT, load_tool
from mmengine.config import Config
from test_safe_load import write_evil

pytestmark = pytest.mark.usefixtures('one_thread')

FGD_TOY = osp.join(
    REPO_ROOT,
    'configs/fgd/fgd_retinanet-r34-w32_retinanet-r18-w32_1xb8-500i_toy-coco.py',
)
CLIP = osp.join(
    REPO_ROOT, 'configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py'
)


@pytest.fixture
def evil(tmp_path):
    marker = str(tmp_path / 'PWNED')
    return write_evil(tmp_path / 'evil.pth', marker), marker


def refused(excinfo, path, marker) -> str:
    """The message, after asserting nothing ran and the path is named."""
    message = str(excinfo.value)
    assert not osp.exists(marker), 'the pickle ran its code'
    assert path in message, message
    assert 'could run code' in message, message
    assert 'weights_only=False' not in message
    return message


@pytest.fixture(scope='module')
def tiny(toy_root, tmp_path_factory):
    """The tiny toy detector's config file and a good checkpoint of it."""
    from conftest import tiny_detector_cfg

    tmp = tmp_path_factory.mktemp('entry_points')
    cfg = tiny_detector_cfg(
        toy_root, str(tmp / 'work'), max_iters=1, name='entry_points'
    )
    cfg_path = str(tmp / 'tiny.py')
    cfg.dump(cfg_path)
    return dict(cfg_path=cfg_path, work_dir=str(tmp / 'work'))


# ----------------------------------------------- train / test / resume
def test_train_load_from(tiny, evil):
    path, marker = evil
    with pytest.raises(SystemExit) as e:
        load_tool('train.py').main(
            [tiny['cfg_path'], '--cfg-options', f'load_from={path}']
        )
    refused(e, path, marker)


def test_train_resume_path(tiny, evil):
    path, marker = evil
    with pytest.raises(SystemExit) as e:
        load_tool('train.py').main([tiny['cfg_path'], '--resume', path])
    refused(e, path, marker)


def test_train_auto_resume_from_last_checkpoint(tiny, evil, tmp_path):
    path, marker = evil
    work_dir = str(tmp_path / 'work')
    os.makedirs(work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)
    with pytest.raises(SystemExit) as e:
        load_tool('train.py').main(
            [tiny['cfg_path'], '--resume', '--work-dir', work_dir]
        )
    refused(e, path, marker)


def test_train_auto_resume_with_an_empty_last_checkpoint(tiny, tmp_path):
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text('')
    torch.save({'state_dict': {}}, work_dir / 'iter_4.pth')
    with pytest.raises(SystemExit, match='is empty') as e:
        load_tool('train.py').main(
            [tiny['cfg_path'], '--resume', '--work-dir', str(work_dir)]
        )
    message = str(e.value)
    assert str(work_dir / 'last_checkpoint') in message
    assert 'iter_4.pth' in message and '--resume PATH' in message
    # one that names a deleted file
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_8.pth'))
    with pytest.raises(SystemExit, match='iter_8.pth", which does not'):
        load_tool('train.py').main(
            [tiny['cfg_path'], '--resume', '--work-dir', str(work_dir)]
        )


def test_stock_runner_resume_with_an_empty_last_checkpoint(tmp_path):
    """Runner(resume=True) itself, as stock mmdet tools call it."""
    from mmengine.runner import find_latest_checkpoint
    from mmengine.runner.runner import find_latest_checkpoint as in_runner

    (tmp_path / 'last_checkpoint').write_text('\n')
    for find in (find_latest_checkpoint, in_runner):
        with pytest.raises(FileNotFoundError, match='is empty'):
            find(str(tmp_path))
    os.remove(tmp_path / 'last_checkpoint')
    assert find_latest_checkpoint(str(tmp_path)) is None


def test_test_tool(tiny, evil):
    path, marker = evil
    with pytest.raises(SystemExit) as e:
        load_tool('test.py').main([tiny['cfg_path'], path])
    refused(e, path, marker)


def test_broken_checkpoint_names_the_file_in_test_tool(tiny, tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(SystemExit, match='is empty') as e:
        load_tool('test.py').main([tiny['cfg_path'], str(empty)])
    assert str(empty) in str(e.value)
    assert 'weights_only' not in str(e.value)


# ------------------------------------------------------- config fields
def _seed_hub_cache(monkeypatch, tmp_path, url, src) -> str:
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    dst = str(cache / osp.basename(url))
    shutil.copy(src, dst)
    return dst


def _fgd_model_cfg(teacher_ckpt):
    cfg = Config.fromfile(FGD_TOY)
    cfg.model.teacher_ckpt = teacher_ckpt
    return cfg.model


@pytest.mark.parametrize('where', ['local', 'url'])
def test_distiller_teacher_ckpt(evil, tmp_path, monkeypatch, where):
    from mmdet.registry import MODELS

    from mmvfm.fileio import UnsafeCheckpointError

    path, marker = evil
    named = path
    if where == 'url':
        url = 'https://download.openmmlab.com/x/teacher-0123abcd.pth'
        named = _seed_hub_cache(monkeypatch, tmp_path, url, path)
        path = url
    with pytest.raises(UnsafeCheckpointError) as e:
        MODELS.build(_fgd_model_cfg(path))
    refused(e, named, marker)


@pytest.mark.parametrize('where', ['local', 'torchvision'])
def test_pretrained_init_cfg(evil, tmp_path, monkeypatch, where):
    """``init_cfg=dict(type='Pretrained', checkpoint=...)`` (Uni-Perceiver
    v2's ``torchvision://resnet50`` and every backbone of mmdet's
    configs)."""
    from mmdet.registry import MODELS
    from mmengine.runner.checkpoint import get_torchvision_models

    from mmvfm.fileio import UnsafeCheckpointError

    path, marker = evil
    named = path
    if where == 'torchvision':
        url = get_torchvision_models()['resnet18']
        named = _seed_hub_cache(monkeypatch, tmp_path, url, path)
        path = 'torchvision://resnet18'
    backbone = MODELS.build(
        dict(
            type='ResNet',
            depth=18,
            base_channels=8,
            init_cfg=dict(type='Pretrained', checkpoint=path),
        )
    )
    with pytest.raises(UnsafeCheckpointError) as e:
        backbone.init_weights()
    refused(e, named, marker)


def test_strict_pretrained_key_check(evil):
    from mmvfm.fileio import UnsafeCheckpointError
    from mmvfm.models.common.strict_pretrained import check_pretrained_keys

    path, marker = evil
    with pytest.raises(UnsafeCheckpointError) as e:
        check_pretrained_keys(torch.nn.Linear(2, 2), path)
    refused(e, path, marker)


def test_lora_release(evil):
    from mmvfm.fileio import UnsafeCheckpointError
    from mmvfm.models.peft import load_lora

    path, marker = evil
    with pytest.raises(UnsafeCheckpointError) as e:
        load_lora(torch.nn.Linear(2, 2), path)
    refused(e, path, marker)


# --------------------------------------------------------------- tools
def test_visft_ood_eval_tuned_is_refused_before_the_base_run(
    evil, toy_root, tmp_path, monkeypatch
):
    tool = load_tool('analysis_tools/visft_ood_eval.py')
    path, marker = evil

    def no_runner(*args, **kwargs):
        raise AssertionError('the base evaluation started before --tuned')

    monkeypatch.setattr(tool.Runner, 'from_cfg', no_runner)
    with pytest.raises(SystemExit) as e:
        tool.main(
            [
                CLIP,
                str(tmp_path / 'base.pth'),
                '--tuned',
                path,
                '--data-root',
                toy_root,
                '--work-dir',
                str(tmp_path / 'ood'),
            ]
        )
    assert '--tuned' in str(e.value)
    refused(e, path, marker)


@pytest.mark.parametrize(
    'tool, extra',
    [
        ('model_converters/publish_model.py', []),
        ('model_converters/fgd_student_only.py', []),
        ('model_converters/fgd_convert_reference.py', []),
        ('model_converters/eva_clip_to_mmpretrain.py', []),
        ('model_converters/open_clip_to_mmvfm.py', []),
    ],
)
def test_converters(evil, tmp_path, tool, extra):
    path, marker = evil
    with pytest.raises(SystemExit) as e:
        load_tool(tool).main([path, str(tmp_path / 'out.pth'), *extra])
    refused(e, path, marker)
    assert not osp.exists(tmp_path / 'out.pth')


def test_converter_unsafe_load_is_an_explicit_opt_in(tmp_path):
    """``--unsafe-load`` reads a trusted file with classes outside the
    allow-list, with a warning."""
    import argparse

    src = str(tmp_path / 'trusted.pth')
    torch.save(
        {
            'args': argparse.Namespace(lr=0.1),
            'state_dict': {'student.w': torch.ones(1)},
        },
        src,
    )
    tool = load_tool('model_converters/fgd_student_only.py')
    with pytest.raises(SystemExit, match='could run code'):
        tool.main([src, str(tmp_path / 'out.pth')])
    with pytest.warns(UserWarning, match='full unpickling'):
        tool.main([src, str(tmp_path / 'out.pth'), '--unsafe-load'])
    assert osp.isfile(tmp_path / 'out.pth')


@pytest.mark.parametrize(
    'tool', ['fgd_loss_magnitudes.py', 'fgd_visualize.py']
)
def test_fgd_analysis_tools(evil, toy_root, tmp_path, tool):
    path, marker = evil
    root = toy_root.rstrip('/') + '/'
    argv = [
        FGD_TOY,
        '--checkpoint',
        path,
        '--cfg-options',
        'model.teacher_ckpt=None',
        'model.allow_untrained_teacher=True',
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
    ]
    if tool == 'fgd_visualize.py':
        argv += ['--out', str(tmp_path / 'maps.png')]
    with pytest.raises(SystemExit) as e:
        load_tool(f'analysis_tools/{tool}').main(argv)
    refused(e, path, marker)


# ------------------------------------------------- no loader bypasses it
UNPICKLERS = {
    ('torch', 'load'),
    ('serialization', 'load'),
    ('hub', 'load_state_dict_from_url'),
    ('model_zoo', 'load_url'),
    ('pickle', 'load'),
    ('pickle', 'loads'),
    ('pickle', 'Unpickler'),
    ('dl_utils', 'load_url'),
}
# the one place that unpickles, and why
ALLOWED = {'mmvfm/fileio/safe_load.py'}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value
            base = (
                value.id
                if isinstance(value, ast.Name)
                else value.attr
                if isinstance(value, ast.Attribute)
                else ''
            )
            yield node.lineno, (base, node.func.attr)
        if isinstance(node, ast.ImportFrom) and node.module in (
            'torch',
            'pickle',
            'torch.hub',
            'torch.serialization',
            'torch.utils.model_zoo',
        ):
            for alias in node.names:
                if alias.name in ('load', 'loads', 'load_url') or (
                    alias.name == 'load_state_dict_from_url'
                ):
                    yield node.lineno, (node.module, alias.name)


def test_no_unpickling_bypasses_the_loader():
    files = [
        p
        for pattern in (
            'mmvfm/**/*.py',
            'tools/**/*.py',
            'projects/**/*.py',
            'benchmarks/**/*.py',
        )
        for p in glob.glob(osp.join(REPO_ROOT, pattern), recursive=True)
    ]
    assert len(files) > 50
    found = []
    for path in files:
        rel = osp.relpath(path, REPO_ROOT)
        if rel in ALLOWED:
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), rel)
        for lineno, call in _calls(tree):
            if call in UNPICKLERS or (
                call[0] in ('torch', 'pickle', 'torch.hub')
                and call[1] in ('load', 'loads', 'load_state_dict_from_url')
            ):
                found.append(f'{rel}:{lineno}: {".".join(call)}')
    assert not found, 'use mmvfm.fileio.safe_load:\n' + '\n'.join(found)
