# Copyright (c) mmvfm contributors. All rights reserved.
"""MultiTaskVisualizationHook: each task drawn by its own hook, in its own
folder, with its own class names; tools/test.py --show-dir on it."""

import glob
import importlib.util
import os.path as osp

import mmcv
import pytest
from mmengine.runner import Runner

from mmvfm.engine import MultiTaskVisualizationHook

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)


def _load_test_tool():
    spec = importlib.util.spec_from_file_location(
        'tool_test_vis', osp.join(REPO_ROOT, 'tools', 'test.py')
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_task_drawn_by_its_hook(tiny_mt_cfg):
    cfg = tiny_mt_cfg(name='mt_vis')
    cfg.default_hooks.visualization.update(draw=True, test_out_dir='vis')
    runner = Runner.from_cfg(cfg)
    hook = next(
        h for h in runner.hooks if isinstance(h, MultiTaskVisualizationHook)
    )
    (det_hook,) = hook.hooks.values()
    # the run's options reach the task hook; its folder is per task
    assert det_hook.draw is True
    assert det_hook.test_out_dir == osp.join('vis', 'det')
    runner.test()

    out_root = osp.join(cfg.work_dir, runner.timestamp, 'vis')
    # only the detection task is drawn, into vis/det/
    assert sorted(
        osp.relpath(p, out_root) for p in glob.glob(out_root + '/*')
    ) == ['det']
    det_dataset = runner.test_loop.dataloaders['det'].dataset
    drawn = sorted(glob.glob(osp.join(out_root, 'det', '*')))
    assert len(drawn) == len(det_dataset)
    assert sorted(osp.basename(p) for p in drawn) == sorted(
        osp.basename(det_dataset.get_data_info(i)['img_path'])
        for i in range(len(det_dataset))
    )
    # a detection drawing: ground truth | prediction side by side, the
    # ground-truth boxes drawn on the left half
    for i in range(len(det_dataset)):
        path = det_dataset.get_data_info(i)['img_path']
        image = mmcv.imread(path)
        drawing = mmcv.imread(osp.join(out_root, 'det', osp.basename(path)))
        h, w = image.shape[:2]
        assert drawing.shape == (h, 2 * w, 3)
        assert (drawing[:, :w] != image).any()
    # the detection task's class names were given to the visualizer
    assert (
        runner.visualizer.dataset_meta['classes']
        == det_dataset.metainfo['classes']
    )


def test_unknown_task_raises_at_start(tiny_mt_cfg):
    cfg = tiny_mt_cfg(name='mt_vis_unknown')
    cfg.default_hooks.visualization.task_hooks = dict(
        seg=dict(type='DetVisualizationHook')
    )
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"names \['seg'\].*det"):
        runner.test()


def test_bad_task_hooks():
    with pytest.raises(TypeError, match='task_hooks must be'):
        MultiTaskVisualizationHook(task_hooks=[])
    with pytest.raises(TypeError, match='task_hooks.det must be'):
        MultiTaskVisualizationHook(task_hooks=dict(det=dict(draw=True)))


def test_show_dir_needs_the_multi_task_hook(tiny_mt_cfg, tmp_path):
    cfg = tiny_mt_cfg(name='mt_vis_tool')
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook')
    cfg_path = str(tmp_path / 'mt.py')
    cfg.dump(cfg_path)
    ckpt = tmp_path / 'ckpt.pth'
    ckpt.write_bytes(b'')
    tool = _load_test_tool()
    args = tool.parse_args([cfg_path, str(ckpt), '--show-dir', 'vis'])
    with pytest.raises(SystemExit, match='MultiTaskVisualizationHook'):
        tool.build_test_cfg(args)
    # with the multi-task hook, --show-dir is set on it
    cfg.default_hooks.visualization = dict(
        type='MultiTaskVisualizationHook',
        task_hooks=dict(det=dict(type='DetVisualizationHook')),
    )
    cfg.dump(cfg_path)
    built = tool.build_test_cfg(args)
    hook = built.default_hooks.visualization
    assert hook.draw is True and hook.test_out_dir == 'vis'
