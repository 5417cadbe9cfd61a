# Copyright (c) mmvfm contributors. All rights reserved.
"""A toy config that needs another run's checkpoint stops, before anything
is built or generated, naming the field, the file and the command that
writes it."""

import os
import os.path as osp

import pytest
from conftest import REPO_ROOT, load_tool
from mmengine.config import Config

from mmvfm.utils import check_checkpoint_paths

FGD_TOY = osp.join(
    REPO_ROOT,
    'configs/fgd/fgd_retinanet-r34-w32_retinanet-r18-w32_1xb8-500i_toy-coco.py',
)
STAGE2 = osp.join(
    REPO_ROOT,
    'configs/visft/visft_stage2_vit-t8_lora-r8_1xb8-300i_toy-coco.py',
)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory: no work_dirs, no data."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_teacher_names_the_command(elsewhere):
    with pytest.raises(FileNotFoundError) as e:
        check_checkpoint_paths(Config.fromfile(FGD_TOY))
    message = str(e.value)
    assert message.startswith('model.teacher_ckpt: checkpoint "work_dirs/')
    assert (
        'python tools/train.py configs/toy/'
        'retinanet_r34-w32_fpn_gn-head_1xb8-1500i_toy-coco.py'
    ) in message.replace(REPO_ROOT + '/', '')


def test_visft_stage2_names_each_stage(elsewhere):
    cfg = Config.fromfile(STAGE2)
    produced = []
    for _ in range(5):
        try:
            check_checkpoint_paths(cfg)
            break
        except FileNotFoundError as e:
            message = str(e.value) if hasattr(e, 'value') else str(e)
            path = message.split('"')[1]
            assert 'it is written by: python tools/train.py' in message
            produced.append(message.rsplit('/', 1)[-1])
            os.makedirs(osp.dirname(path), exist_ok=True)
            open(path, 'w').close()
    assert 'clip_vit-t8_text-w128_1xb32-500i_toy-coco.py' in produced
    assert any(p.startswith('visft_stage1-det') for p in produced)
    assert any(p.startswith('visft_stage1-seg') for p in produced)
    assert any(p.startswith('visft_stage1-cap') for p in produced)


def test_urls_and_present_files_pass(tmp_path):
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    cfg = Config(
        dict(
            load_from=str(ckpt),
            model=dict(
                backbone=dict(
                    init_cfg=dict(
                        type='Pretrained', checkpoint='torchvision://resnet50'
                    )
                )
            ),
        )
    )
    assert check_checkpoint_paths(cfg) == [str(ckpt)]


def test_train_tool_stops_before_generating_data(elsewhere):
    with pytest.raises(SystemExit, match='it is written by: python tools'):
        load_tool('train.py').main([FGD_TOY])
    assert not osp.exists(elsewhere / 'data')
