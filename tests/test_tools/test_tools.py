# Copyright (c) mmvfm contributors. All rights reserved.
"""The command-line tools, in process, on the tiny toy set."""

import glob
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import load_tool

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOY_CONFIG = 'configs/toy/retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py'


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    """Train the tiny detector 2 iterations with tools/train.py."""
    from conftest import tiny_detector_cfg

    tmp = tmp_path_factory.mktemp('tools')
    work_dir = str(tmp / 'train')
    cfg = tiny_detector_cfg(
        toy_root, work_dir, max_iters=2, name='tools_train'
    )
    cfg_path = str(tmp / 'tiny.py')
    cfg.dump(cfg_path)
    load_tool('train.py').main([cfg_path, '--work-dir', work_dir])
    return dict(
        cfg_path=cfg_path,
        work_dir=work_dir,
        tmp=tmp,
        ckpt=osp.join(work_dir, 'iter_2.pth'),
    )


def test_train_writes_checkpoint_and_logs(trained):
    assert osp.isfile(trained['ckpt'])
    assert glob.glob(
        osp.join(trained['work_dir'], '*', 'vis_data', 'scalars.json')
    )


def test_test_tool_evaluates_dumps_and_draws(trained):
    out = str(trained['tmp'] / 'results.pkl')
    work_dir = str(trained['tmp'] / 'test')
    metrics = load_tool('test.py').main(
        [
            trained['cfg_path'],
            trained['ckpt'],
            '--work-dir',
            work_dir,
            '--out',
            out,
            '--show-dir',
            'vis',
            '--cfg-options',
            'experiment_name=tools_test',
            'visualizer.name=tools_test',
        ]
    )
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 8  # every val image
    assert {'img_id', 'pred_instances'} <= set(results[0])
    drawn = glob.glob(osp.join(work_dir, '*', 'vis', '*.png'))
    assert len(drawn) == 8


def test_stock_mmdet_test_tool_loads_our_checkpoint(trained):
    """mmdet's own tools/test.py gets the stack fixes (torchvision, weights
    only loading) through the config's custom_imports alone."""
    import mmdet

    stock_test = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py'
    )
    proc = subprocess.run(
        [
            sys.executable,
            stock_test,
            trained['cfg_path'],
            trained['ckpt'],
            '--work-dir',
            str(trained['tmp'] / 'stock'),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr


def test_resume_option(trained):
    from mmengine.config import Config

    cfg = Config.fromfile(trained['cfg_path'])
    args = load_tool('train.py').parse_args(
        [trained['cfg_path'], '--resume', trained['ckpt']]
    )
    resumed = load_tool('train.py').build_train_cfg(args)
    assert resumed.resume and resumed.load_from == trained['ckpt']
    args = load_tool('train.py').parse_args([trained['cfg_path'], '--resume'])
    auto = load_tool('train.py').build_train_cfg(args)
    assert auto.resume and auto.load_from is None
    args = load_tool('train.py').parse_args(
        [trained['cfg_path'], '--auto-scale-lr']
    )
    assert load_tool('train.py').build_train_cfg(args).auto_scale_lr.enable
    assert cfg.auto_scale_lr.base_batch_size == 8


def test_missing_inputs_have_clear_messages(trained, tmp_path):
    train = load_tool('train.py')
    with pytest.raises(SystemExit, match='config file "nope.py" does not'):
        train.main(['nope.py'])
    with pytest.raises(SystemExit, match='mmdet::nope/nope.py'):
        train.main(['mmdet::nope/nope.py'])
    # a toy set whose folder exists but lacks its files is not generated
    (tmp_path / 'broken').mkdir()
    with pytest.raises(SystemExit, match='generate_toy_coco.py'):
        train.main(
            [
                trained['cfg_path'],
                '--work-dir',
                str(tmp_path),
                '--cfg-options',
                f'train_dataloader.dataset.data_root={tmp_path}/broken',
            ]
        )
    # nor is a real (non-toy) dataset's absent folder
    with pytest.raises(SystemExit, match=r'data_root.*coco_none" does not'):
        train.main(
            [
                trained['cfg_path'],
                '--work-dir',
                str(tmp_path),
                '--cfg-options',
                'train_dataloader.dataset.type=CocoDataset',
                f'train_dataloader.dataset.data_root={tmp_path}/coco_none',
            ]
        )
    assert not osp.exists(tmp_path / 'coco_none')
    with pytest.raises(SystemExit, match='checkpoint "missing.pth" does'):
        load_tool('test.py').main([trained['cfg_path'], 'missing.pth'])
    with pytest.raises(SystemExit, match='does not exist'):
        train.main([trained['cfg_path'], '--resume', 'missing.pth'])


def test_train_generates_an_absent_toy_set_first(trained, tmp_path):
    """One command: the toy set's folder absent, tools/train.py writes it
    (with the config's generator arguments) and trains on it."""
    from mmvfm.datasets import verify_toy_coco

    root = str(tmp_path / 'toy_first')
    runner = load_tool('train.py').main(
        [
            trained['cfg_path'],
            '--work-dir',
            str(tmp_path / 'run'),
            '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            'train_dataloader.dataset.generator.num_train=6',
            'train_dataloader.dataset.generator.num_val=2',
            'train_dataloader.dataset.generator.img_size=48,56',
            'train_dataloader.dataset.generator.num_captions=1',
            'experiment_name=tools_first_use',
            'visualizer.name=tools_first_use',
        ]
    )
    assert runner.iter == 2
    summary = verify_toy_coco(root)
    assert summary['train']['images'] == 6
    assert osp.isfile(osp.join(str(tmp_path / 'run'), 'iter_2.pth'))


def test_print_config(trained, tmp_path, capsys):
    save = str(tmp_path / 'full.py')
    load_tool('misc/print_config.py').main(
        [
            trained['cfg_path'],
            '--cfg-options',
            'model.neck.out_channels=48',
            '--save-path',
            save,
        ]
    )
    out = capsys.readouterr().out
    assert 'ToyCocoDataset' in out and 'out_channels=48' in out
    assert osp.isfile(save)


def test_publish_model(trained, tmp_path):
    final = load_tool('model_converters/publish_model.py').process_checkpoint(
        trained['ckpt'], str(tmp_path / 'tiny.pth')
    )
    assert osp.basename(final).startswith('tiny-') and final.endswith('.pth')
    ckpt = torch.load(final, map_location='cpu')  # weights only
    assert set(ckpt) == {'meta', 'state_dict'}
    assert 'message_hub' not in ckpt['meta']
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_tool('model_converters/publish_model.py').process_checkpoint(
            'nothere.pth', str(tmp_path / 'x.pth')
        )


def test_analyze_logs_plots_curves(trained, tmp_path):
    tool = load_tool('analysis_tools/analyze_logs.py')
    out = str(tmp_path / 'curves.png')
    tool.plot_curve([trained['work_dir']], ['loss', 'coco/bbox_mAP'], out)
    assert osp.getsize(out) > 1000
    series = tool.load_scalars(trained['work_dir'])
    assert [step for step, _ in series['loss']] == [1, 2]
    with pytest.raises(KeyError, match='no_such_key'):
        tool.plot_curve([trained['work_dir']], ['no_such_key'], out)
    stats = tool.cal_train_time(trained['work_dir'])
    assert stats['mean'] > 0


def test_browse_dataset_draws_ground_truth(trained, tmp_path):
    from mmengine.config import Config

    tool = load_tool('analysis_tools/browse_dataset.py')
    cfg = Config.fromfile(trained['cfg_path'])
    cfg.visualizer.name = 'browse'
    written = tool.browse(cfg, 'train', str(tmp_path), max_images=3)
    assert len(written) == 3 and all(osp.isfile(p) for p in written)
