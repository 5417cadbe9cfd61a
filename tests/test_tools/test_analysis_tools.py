# Copyright (c) mmvfm contributors. All rights reserved.
"""The analysis tools (tools/analysis_tools/) on the tiny toy detector:
FLOPs, inference speed on the CPU, the confusion matrix, per-image mAP,
COCO error analysis, fusion of results, dataset browsing, and mmdet's own
log analysis (seaborn). One untrained checkpoint and one tools/test.py run
(``--out`` pickle, COCO json) are shared by the module."""

import json
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, load_tool

pytestmark = pytest.mark.usefixtures('one_thread')

NUM_CLASSES = 5  # the toy set's shapes


class Evil:
    """Unpickling runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.fixture(scope='module')
def run(toy_root, tmp_path_factory):
    """The tiny detector's config and checkpoint (as initialised), and its
    test run's ``--out`` pickle and ``bbox.json``."""
    from conftest import tiny_detector_cfg
    from mmdet.registry import MODELS
    from mmengine.runner import save_checkpoint

    tmp = tmp_path_factory.mktemp('analysis')
    cfg = tiny_detector_cfg(
        toy_root, str(tmp / 'work'), max_iters=1, name='analysis_tools'
    )
    cfg_path = str(tmp / 'tiny.py')
    cfg.dump(cfg_path)
    model = MODELS.build(cfg.model)
    ckpt = str(tmp / 'tiny.pth')
    save_checkpoint({'meta': {}, 'state_dict': model.state_dict()}, ckpt)
    pkl, prefix = str(tmp / 'results.pkl'), str(tmp / 'results')
    load_tool('test.py').main(
        [
            cfg_path,
            ckpt,
            '--work-dir',
            str(tmp / 'test'),
            '--out',
            pkl,
            '--cfg-options',
            f'test_evaluator.outfile_prefix={prefix}',
            'experiment_name=analysis_test',
            'visualizer.name=analysis_test',
        ]
    )
    ann = osp.join(toy_root, 'annotations', 'instances_val.json')
    with open(ann) as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    from mmvfm.datasets.toy_coco_dataset import ToyCocoDataset

    classes = list(ToyCocoDataset.METAINFO['classes'])
    gt_per_class = np.zeros(NUM_CLASSES, dtype=int)
    for a in coco['annotations']:
        gt_per_class[classes.index(names[a['category_id']])] += 1
    return dict(
        tmp=tmp,
        cfg_path=cfg_path,
        ckpt=ckpt,
        pkl=pkl,
        json=prefix + '.bbox.json',
        ann=ann,
        num_params=sum(p.numel() for p in model.parameters()),
        gt_per_class=gt_per_class,
        num_images=len(coco['images']),
    )


def test_get_flops(run, capsys):
    load_tool('analysis_tools/get_flops.py').main(
        [run['cfg_path'], '--num-images', '2']
    )
    out = capsys.readouterr().out
    flops = re.search(r'Flops: ([\d.]+)([KMG])', out)
    params = re.search(r'Params: ([\d.]+)([KMG])', out)
    assert flops and params, out
    scale = dict(K=1e3, M=1e6, G=1e9)
    assert float(flops.group(1)) * scale[flops.group(2)] > 0
    counted = float(params.group(1)) * scale[params.group(2)]
    assert counted == pytest.approx(run['num_params'], rel=0.01)
    with pytest.raises(SystemExit, match='nope.py" does not exist'):
        load_tool('analysis_tools/get_flops.py').main(['nope.py'])


def test_benchmark_on_the_cpu(run, capsys):
    tool = load_tool('analysis_tools/benchmark.py')
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert tool.parse_args([run['cfg_path']]).device == expected
    result = tool.main(
        [
            run['cfg_path'],
            '--checkpoint',
            run['ckpt'],
            '--device',
            'cpu',
            '--num-warmup',
            '1',
            '--log-interval',
            '2',
            '--max-iter',
            '5',
        ]
    )
    out = capsys.readouterr().out
    assert result['device'] == 'cpu' and result['avg_fps'] > 0
    assert re.search(r'Done image \[2 */5\], fps: [\d.]+ img/s', out), out
    overall = re.search(r'Overall fps: ([\d.]+) img/s', out)
    assert overall and float(overall.group(1)) > 0, out
    # mmdet's dataloader benchmark, timed to the end of a short set
    loader = tool.main(
        [run['cfg_path'], '--task', 'dataloader', '--num-warmup', '0']
    )
    assert loader['avg_fps'] > 0
    with pytest.raises(SystemExit, match='nothing left to time'):
        tool.main([run['cfg_path'], '--num-warmup', '100'])


def test_benchmark_refuses_a_code_running_checkpoint(run, tmp_path):
    marker = tmp_path / 'PWNED'
    evil = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {'w': Evil(marker)}}, evil)
    with pytest.raises(SystemExit, match='could run code') as e:
        load_tool('analysis_tools/benchmark.py').main(
            [run['cfg_path'], '--checkpoint', evil, '--device', 'cpu']
        )
    assert evil in str(e.value) and not marker.exists()


def test_results_pickle_read_without_running_code(run, tmp_path):
    from mmvfm.fileio import (
        CorruptCheckpointError,
        UnsafeCheckpointError,
        safe_load_results,
    )

    results = safe_load_results(run['pkl'])
    with open(run['pkl'], 'rb') as f:  # our own file: trusted
        expected = pickle.load(f)
    assert len(results) == len(expected) == run['num_images']
    for got, want in zip(results, expected):
        assert got['img_id'] == want['img_id']
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(
                got['pred_instances'][key], want['pred_instances'][key]
            )
    marker = tmp_path / 'PWNED'
    evil = str(tmp_path / 'evil.pkl')
    with open(evil, 'wb') as f:  # as mmengine.dump writes: protocol 2
        pickle.dump([{'pred_instances': Evil(marker)}], f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match='could run code') as e:
        safe_load_results(evil)
    assert evil in str(e.value) and not marker.exists()
    with pytest.raises(SystemExit, match='could run code'):
        load_tool('analysis_tools/confusion_matrix.py').main(
            [run['cfg_path'], evil, str(tmp_path / 'cm')]
        )
    assert not marker.exists()
    truncated = tmp_path / 'truncated.pkl'
    with open(run['pkl'], 'rb') as f:
        truncated.write_bytes(f.read()[:5000])
    with pytest.raises(CorruptCheckpointError, match='truncated'):
        safe_load_results(str(truncated))
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        safe_load_results(str(tmp_path / 'missing.pkl'))


def test_confusion_matrix(run, tmp_path):
    tool = load_tool('analysis_tools/confusion_matrix.py')
    save_dir = str(tmp_path / 'cm')
    matrix = tool.main(
        [run['cfg_path'], run['pkl'], save_dir, '--score-thr', '0']
    )
    assert matrix.shape == (NUM_CLASSES + 1, NUM_CLASSES + 1)
    assert osp.getsize(osp.join(save_dir, 'confusion_matrix.png')) > 1000
    csv = osp.join(save_dir, 'confusion_matrix.csv')
    saved = np.loadtxt(csv, delimiter=',', ndmin=2)
    np.testing.assert_array_equal(saved, matrix)
    # every ground-truth box is counted at least once (matched or missed);
    # 100 boxes an image of an untrained model: false detections
    assert (matrix[:-1].sum(1) >= run['gt_per_class']).all()
    assert matrix[-1].sum() > 0
    # no detection passes: each box is missed exactly once
    none = tool.main(
        [run['cfg_path'], run['pkl'], save_dir, '--score-thr', '1.01']
    )
    np.testing.assert_array_equal(none[:-1, -1], run['gt_per_class'])
    assert none.sum() == run['gt_per_class'].sum()


def test_analyze_results_draws_the_best_and_the_worst(run, tmp_path):
    show_dir = str(tmp_path / 'analyze')
    good, bad = load_tool('analysis_tools/analyze_results.py').main(
        [run['cfg_path'], run['pkl'], show_dir, '--topk', '2']
    )
    assert len(good) == len(bad) == 2
    assert not {i for i, _ in good} & {i for i, _ in bad}
    maps = [m for _, m in good + bad]
    assert all(0.0 <= m <= 1.0 for m in maps)
    assert min(m for _, m in good) >= max(m for _, m in bad)
    for name in ('good', 'bad'):
        drawn = os.listdir(osp.join(show_dir, name))
        assert len(drawn) == 2 and all(f.endswith('.png') for f in drawn)


def test_coco_error_analysis(run, tmp_path):
    out_dir = str(tmp_path / 'errors')
    proc = subprocess.run(
        [
            sys.executable,
            osp.join(
                REPO_ROOT, 'tools', 'analysis_tools', 'coco_error_analysis.py'
            ),
            run['json'],
            out_dir,
            '--ann',
            run['ann'],
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, MPLBACKEND='Agg'),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plots = set(os.listdir(osp.join(out_dir, 'bbox')))
    # per class and overall, four area ranges each
    assert len(plots) == (NUM_CLASSES + 1) * 4, plots
    assert 'bbox-allclass-allarea.png' in plots
    assert '24 plots written' in proc.stdout
    tool = load_tool('analysis_tools/coco_error_analysis.py')
    with pytest.raises(SystemExit, match='must be a .json'):
        tool.main([run['pkl'], out_dir, '--ann', run['ann']])


def test_fuse_results_of_one_model_twice_is_that_model(run, tmp_path):
    out_dir = str(tmp_path / 'fused')
    result = load_tool('analysis_tools/fuse_results.py').main(
        [
            run['json'],
            run['json'],
            '--annotation',
            run['ann'],
            '--eval-single',
            '--save-fusion-results',
            '--out-dir',
            out_dir,
        ]
    )
    with open(run['json']) as f:
        single = json.load(f)
    with open(osp.join(out_dir, 'fusion_results.json')) as f:
        fused = json.load(f)
    assert len(fused) == len(result['fused']) == len(single)
    np.testing.assert_allclose(result['stats'], result['single'][0], atol=1e-3)
    # the same [x, y, w, h] boxes come back (fused as x1, y1, x2, y2)
    best = max(single, key=lambda d: d['score'])
    same = [
        d
        for d in fused
        if d['image_id'] == best['image_id']
        and d['category_id'] == best['category_id']
        and abs(d['score'] - best['score']) < 1e-5
    ]
    assert same, best
    np.testing.assert_allclose(same[0]['bbox'], best['bbox'], rtol=1e-4)
    with pytest.raises(SystemExit):  # one weight for two models
        load_tool('analysis_tools/fuse_results.py').main(
            [run['json'], run['json'], '--annotation', run['ann']]
            + ['--weights', '1']
        )


def test_browse_dataset_generates_an_absent_toy_set(run, tmp_path):
    root = str(tmp_path / 'toy_first')
    out_dir = str(tmp_path / 'browse')
    load_tool('analysis_tools/browse_dataset.py').main(
        [
            run['cfg_path'],
            '--split',
            'val',
            '--max-images',
            '2',
            '--output-dir',
            out_dir,
            '--not-show',
            '--cfg-options',
            f'val_dataloader.dataset.data_root={root}',
            'val_dataloader.dataset.generator.num_train=2',
            'val_dataloader.dataset.generator.num_val=3',
            'val_dataloader.dataset.generator.img_size=48,56',
            'val_dataloader.dataset.generator.num_captions=1',
            'visualizer.name=browse_first_use',
        ]
    )
    assert osp.isfile(osp.join(root, 'annotations', 'instances_val.json'))
    assert sorted(os.listdir(out_dir)) == ['000001.png', '000002.png']


def test_stock_analyze_logs_has_seaborn(tmp_path):
    """mmdet's analyze_logs (``mim run mmdet analyze_logs``) imports
    seaborn, a runtime requirement."""
    import mmdet

    log = tmp_path / 'scalars.json'
    lines = [
        dict(lr=0.01, loss=2.0 - 0.5 * i, time=0.2, iter=i, step=i)
        for i in (1, 2)
    ]
    log.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    out = str(tmp_path / 'loss.png')
    stock = osp.join(
        osp.dirname(mmdet.__file__),
        '.mim',
        'tools',
        'analysis_tools',
        'analyze_logs.py',
    )
    proc = subprocess.run(
        [sys.executable, stock, 'plot_curve', str(log), '--keys', 'loss']
        + ['--out', out],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MPLBACKEND='Agg'),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert osp.getsize(out) > 1000
