# Copyright (c) mmvfm contributors. All rights reserved.
"""FGD through the Runner and the tools on the toy set."""

import copy
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)
LEVELS = [0, 1, 2, 3, 4]


def fgd_model(student: dict, teacher: dict, teacher_ckpt: str) -> dict:
    """FGD on the 5 FPN levels of toy RetinaNets (32-channel student and
    teacher), init_student on."""
    ch = student['neck']['out_channels']
    loss = dict(
        type='FGDLoss',
        student_channels=ch,
        teacher_channels=teacher['neck']['out_channels'],
        temp=0.5,
        alpha_fgd=1e-3,
        beta_fgd=5e-4,
        gamma_fgd=5e-4,
        lambda_fgd=5e-6,
    )
    return dict(
        type='SingleTeacherDistiller',
        student=copy.deepcopy(student),
        teacher=copy.deepcopy(teacher),
        teacher_ckpt=teacher_ckpt,
        init_student=True,
        recorders={
            f'fpn_{i}': dict(
                student=f'neck.fpn_convs.{i}.conv',
                teacher=f'neck.fpn_convs.{i}.conv',
            )
            for i in LEVELS
        },
        distill_losses={f'loss_fgd_fpn_{i}': dict(loss) for i in LEVELS},
        loss_inputs={f'loss_fgd_fpn_{i}': f'fpn_{i}' for i in LEVELS},
    )


@pytest.fixture(scope='module')
def fgd_setup(toy_root, tmp_path_factory):
    """A saved toy teacher and an FGD config file around the tiny student."""
    from conftest import tiny_detector_cfg

    tmp = tmp_path_factory.mktemp('fgd')
    base = tiny_detector_cfg(
        toy_root, str(tmp / 'work'), max_iters=2, name='fgd_e2e'
    )
    torch.manual_seed(0)
    teacher = MODELS.build(base.model)
    teacher.init_weights()
    ckpt = str(tmp / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    cfg = copy.deepcopy(base)
    cfg.model = fgd_model(base.model, base.model, ckpt)
    cfg.optim_wrapper.constructor = 'TrainableOptimWrapperConstructor'
    cfg.find_unused_parameters = True
    path = str(tmp / 'fgd_tiny.py')
    cfg.dump(path)
    student_path = str(tmp / 'student_tiny.py')
    base.dump(student_path)
    return dict(
        tmp=tmp,
        cfg_path=path,
        student_cfg_path=student_path,
        teacher_ckpt=ckpt,
    )


def _load(path, **options):
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(options)
    return cfg


@pytest.fixture(scope='module')
def fgd_trained(fgd_setup):
    """Two FGD iterations and a val pass through the Runner."""
    work = str(fgd_setup['tmp'] / 'run')
    cfg = _load(
        fgd_setup['cfg_path'],
        work_dir=work,
        experiment_name='fgd_run',
        **{'visualizer.name': 'fgd_run'},
    )
    runner = Runner.from_cfg(cfg)
    runner.train()
    return dict(runner=runner, work=work, ckpt=osp.join(work, 'iter_2.pth'))


def test_train_val_logs_every_term(fgd_trained):
    with open(
        glob.glob(
            osp.join(fgd_trained['work'], '*', 'vis_data', 'scalars.json')
        )[0]
    ) as f:
        entries = [json.loads(line) for line in f]
    train = [e for e in entries if 'loss' in e]
    for i in LEVELS:
        assert train[0][f'loss_fgd_fpn_{i}'] > 0
        for term in ('fg', 'bg', 'at', 'rela'):
            assert f'fgd_fpn_{i}.{term}' in train[0]
    assert len([e for e in entries if 'coco/bbox_mAP' in e]) == 1
    assert osp.isfile(fgd_trained['ckpt'])


def test_resume(fgd_setup, fgd_trained):
    """Resuming continues at iteration 3 with the saved optimizer state."""
    cfg = _load(
        fgd_setup['cfg_path'],
        work_dir=str(fgd_setup['tmp'] / 'res'),
        experiment_name='fgd_resumed',
        **{
            'visualizer.name': 'fgd_resumed',
            'train_cfg.max_iters': 4,
            'train_cfg.val_interval': 4,
        },
    )
    cfg.resume, cfg.load_from = True, fgd_trained['ckpt']
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    saved = torch.load(fgd_trained['ckpt'], map_location='cpu')
    assert saved['meta']['iter'] == 2 and 'optimizer' in saved


def test_student_only_export_loads_in_plain_mmdet(fgd_setup, fgd_trained):
    """The exported student is evaluated by mmdet's own test tool with the
    plain student config, every key matching."""
    tmp = fgd_setup['tmp']
    out = str(tmp / 'student.pth')
    proc = subprocess.run(
        [
            sys.executable,
            osp.join(
                REPO_ROOT, 'tools', 'model_converters', 'fgd_student_only.py'
            ),
            fgd_trained['ckpt'],
            out,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    exported = torch.load(out, map_location='cpu')['state_dict']
    trained = fgd_trained['runner'].model.student.state_dict()
    assert set(exported) == set(trained)
    for k, v in trained.items():
        assert torch.equal(exported[k], v), k
    import mmdet

    stock_test = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py'
    )
    proc = subprocess.run(
        [
            sys.executable,
            stock_test,
            fgd_setup['student_cfg_path'],
            out,
            '--work-dir',
            str(tmp / 'stock_test'),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'coco/bbox_mAP' in log
    assert 'unexpected key' not in log and 'missing keys' not in log


def test_stock_config_mixed_in_by_custom_imports_only(toy_root, tmp_path):
    """A stock ``mmdet::`` RetinaNet config turned into an FGD student with
    config lines only, shrunk, trained one step on the toy set."""
    root = toy_root.rstrip('/') + '/'
    text = f"""
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type='SingleTeacherDistiller',
    student={{{{_base_.model}}}},
    teacher={{{{_base_.model}}}},
    allow_untrained_teacher=True,
    recorders=dict(p3=dict(student='neck[0]', teacher='neck[0]')),
    distill_losses=dict(loss_fgd_p3=dict(
        type='FGDLoss', student_channels=32, teacher_channels=32)),
    loss_inputs=dict(loss_fgd_p3='p3'))
optim_wrapper = dict(constructor='TrainableOptimWrapperConstructor')
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1,
                 val_interval=10)
val_cfg = None
val_dataloader = None
val_evaluator = None
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler'),
    dataset=dict(data_root='{root}', metainfo=dict(
        classes=('circle', 'square', 'triangle', 'ring', 'cross')),
        ann_file='annotations/instances_train.json', data_prefix=dict(img='')))
"""
    path = tmp_path / 'stock_fgd.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    # shrink overrides (what --cfg-options would do)
    small = dict(
        backbone=dict(
            depth=18, base_channels=16, init_cfg=None, norm_eval=False
        ),
        neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
        bbox_head=dict(
            num_classes=5, in_channels=32, feat_channels=32, stacked_convs=1
        ),
    )
    for part in ('student', 'teacher'):
        for key, value in small.items():
            cfg.model[part][key].update(value)
    for t in cfg.train_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':
            t['scale'] = (64, 64)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = cfg.visualizer.name = 'stock_fgd'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert type(runner.model).__name__ == 'SingleTeacherDistiller'
    assert runner.model.student.backbone.depth == 18


def test_fgd_two_process_ddp(fgd_setup, dist_train_probed):
    tmp = fgd_setup['tmp']
    cfg = _load(
        fgd_setup['cfg_path'],
        work_dir=str(tmp / 'ddp'),
        experiment_name='fgd_ddp',
        **{'visualizer.name': 'fgd_ddp', 'train_dataloader.batch_size': 2},
    )
    records = dist_train_probed(cfg)
    assert [r['world_size'] for r in records] == [2, 2]
    assert records[0]['digests'] == records[1]['digests']
    assert [r['val_images'] for r in records] == [4, 4]


def _tool(rel_path: str):
    import importlib.util

    path = osp.join(REPO_ROOT, 'tools', rel_path)
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(path)[:-3], path
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_checkpoint_converts_and_loads(fgd_setup, tmp_path):
    """A checkpoint laid out as the reference code saves it (student.*,
    teacher.*, distill_losses.*, recorded maps as buffers) converts into
    one our distiller loads: every student and loss key, nothing else."""
    model = MODELS.build(Config.fromfile(fgd_setup['cfg_path']).model)
    ours = model.state_dict()
    ref = {
        k: v.clone() + 1
        for k, v in ours.items()
        if not k.startswith('data_preprocessor')
    }
    ref['student_neck_fpn_convs_0_conv'] = torch.rand(2, 32, 8, 8)
    ref['teacher_neck_fpn_convs_0_conv'] = torch.rand(2, 32, 8, 8)
    src, dst = str(tmp_path / 'ref.pth'), str(tmp_path / 'ours.pth')
    torch.save({'meta': {}, 'state_dict': ref}, src)
    _tool('model_converters/fgd_convert_reference.py').main([src, dst])
    converted = torch.load(dst)['state_dict']
    assert not any(k.startswith(('teacher', 'student_')) for k in converted)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected
    assert missing and all(k.startswith('teacher.') for k in missing)
    loss_key = 'distill_losses.loss_fgd_fpn_0.conv_mask_s.weight'
    assert torch.equal(model.state_dict()[loss_key], ref[loss_key])
    with pytest.raises(SystemExit, match='not a reference FGD'):
        torch.save({'state_dict': {'distill_losses.x': torch.ones(1)}}, src)
        _tool('model_converters/fgd_convert_reference.py').main([src, dst])


def test_student_only_rejects_plain_checkpoints(tmp_path):
    tool = _tool('model_converters/fgd_student_only.py')
    src = str(tmp_path / 'plain.pth')
    torch.save({'state_dict': {'backbone.conv1.weight': torch.ones(1)}}, src)
    with pytest.raises(SystemExit, match='not a checkpoint of a distiller'):
        tool.main([src, str(tmp_path / 'out.pth')])


def test_fgd_visualize_draws_masks_and_attention(fgd_setup, tmp_path):
    tool = _tool('analysis_tools/fgd_visualize.py')
    model = MODELS.build(Config.fromfile(fgd_setup['cfg_path']).model)
    model.init_weights()
    model.eval()
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    cfg = Config.fromfile(fgd_setup['cfg_path'])
    item = DATASETS.build(cfg.val_dataloader.dataset)[0]
    data = model.data_preprocessor(pseudo_collate([item]), False)
    rows = tool.fgd_maps(model, data)
    assert [r['name'] for r in rows] == [f'loss_fgd_fpn_{i}' for i in LEVELS]
    for row in rows:
        assert row['fg'].shape == row['att_t'].shape == row['att_s'].shape
        assert row['fg'].max() > 0  # every toy image has an object
        # spatial attention sums to H*W by construction
        assert abs(row['att_t'].sum() - row['fg'].size) < 1e-2 * row['fg'].size
    out = str(tmp_path / 'fgd.png')
    tool.main([fgd_setup['cfg_path'], '--out', out])
    assert osp.getsize(out) > 5000


def test_fgd_loss_magnitudes_raw_terms_and_suggested_weights(
    fgd_setup, tmp_path
):
    """Raw terms times the config's weights are the distiller's own logged
    terms on the same batch; suggested weights give each term the asked
    ratio; the detection loss is the student's."""
    tool = _tool('analysis_tools/fgd_loss_magnitudes.py')
    cfg = Config.fromfile(fgd_setup['cfg_path'])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    loader_cfg = dict(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    raw_batch = next(iter(Runner.build_dataloader(loader_cfg, seed=0)))
    result = tool.measure(model, [raw_batch])
    suggested = tool.suggest(result, dict(fg=0.1, rela=0.02))
    data = model.data_preprocessor(raw_batch, True)
    with torch.no_grad():
        losses = model.loss(data['inputs'], data['data_samples'])
    det = sum(
        float(sum(v.mean() for v in value))
        if isinstance(value, (list, tuple))
        else float(value.mean())
        for key, value in losses.items()
        if 'loss' in key and 'fgd' not in key
    )
    assert result['det_loss'] == pytest.approx(det, rel=1e-5)
    for i in LEVELS:
        level = result['levels'][f'loss_fgd_fpn_{i}']
        for term in ('fg', 'bg', 'at', 'rela'):
            logged = float(losses[f'fgd_fpn_{i}.{term}'])
            assert level['raw'][term] * level['weights'][term] == (
                pytest.approx(logged, rel=1e-4, abs=1e-12)
            )
        level_weights = suggested[f'loss_fgd_fpn_{i}']
        assert level_weights['alpha_fgd'] * level['raw']['fg'] == (
            pytest.approx(0.1 * det, rel=1e-4)
        )
        assert level_weights['lambda_fgd'] * level['raw']['rela'] == (
            pytest.approx(0.02 * det, rel=1e-4)
        )
        # no target: the config's weight
        assert level_weights['beta_fgd'] == level['weights']['bg']
        assert level['channels'] > 0 and 0 < level['fg_share'] <= 1
        assert level['boxes_per_image'] >= 1
    # the finest level has background too (the coarsest may be all box)
    assert result['levels']['loss_fgd_fpn_0']['fg_share'] < 1
    # the command line: a table, the JSON, a bad target refused
    out = str(tmp_path / 'mag.json')
    printed = tool.main(
        [fgd_setup['cfg_path'], '--batches', '1', '--target', 'fg=0.1']
        + ['--json', out]
    )
    assert json.load(open(out))['det_loss'] == printed['det_loss']
    assert set(printed['suggested']) == set(result['levels'])
    with pytest.raises(SystemExit):
        tool.main([fgd_setup['cfg_path'], '--target', 'xx=1'])
