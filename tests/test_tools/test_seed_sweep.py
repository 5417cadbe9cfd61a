# Copyright (c) mmvfm contributors. All rights reserved.
"""tools/analysis_tools/seed_sweep.py: statistics on fake run folders,
resuming, README blocks, and one real tiny sweep through tools/train.py."""

import json
import os
import os.path as osp

import pytest
from conftest import TOY_CONFIG, load_tool, tiny_detector_cfg

tool = load_tool('analysis_tools/seed_sweep.py')

METRIC = 'coco/bbox_mAP'
# stock and gq per seed 0, 1, 2: the last validation value of each run
STOCK = [0.10, 0.12, 0.14]
GQ = [0.15, 0.14, 0.20]


def fake_run(
    work,
    name,
    vals,
    key=METRIC,
    done=True,
    stamp='20240101_000000',
):
    """A finished run's folder: ``vals`` logged at validation steps 10,
    20, ... after two training lines each."""
    vis = osp.join(work, name, stamp, 'vis_data')
    os.makedirs(vis, exist_ok=True)
    lines = []
    for i, value in enumerate(vals):
        step = 10 * (i + 1)
        for it in (step - 5, step):
            lines.append(dict(lr=0.01, loss=2.0 / it, iter=it, step=it))
        lines.append({key: value, f'{key}_50': 0.5, 'step': step})
    with open(osp.join(vis, 'scalars.json'), 'w') as f:
        f.write('\n'.join(json.dumps(line) for line in lines) + '\n')
    if done:
        open(osp.join(work, name, 'done'), 'w').close()


def sweep_args(work, *extra, seeds=('0', '1', '2')):
    return [
        str(work),
        '--variant',
        'stock',
        TOY_CONFIG,
        '--variant',
        'gq',
        TOY_CONFIG,
        'model.bbox_head.num_classes=3',
        '--seeds',
        *seeds,
        '--metrics',
        METRIC,
        '--baseline',
        'stock',
        *extra,
    ]


@pytest.fixture
def fake_sweep(tmp_path):
    """Three seeds of two variants; each run's value is high at its first
    validation (0.3) and ends at STOCK / GQ."""
    for seed, (s, g) in enumerate(zip(STOCK, GQ)):
        fake_run(tmp_path, f'stock_s{seed}', [0.3, s])
        fake_run(tmp_path, f'gq_s{seed}', [0.3, g])
    return tmp_path


def test_statistics_by_hand(fake_sweep):
    sweep = tool.main(sweep_args(fake_sweep, '--collect-only'))
    with open(fake_sweep / 'sweep.json') as f:
        assert json.load(f) == sweep
    stock, gq = (
        sweep['metrics'][METRIC]['stock'],
        sweep['metrics'][METRIC]['gq'],
    )
    assert stock['values'] == {'0': 0.10, '1': 0.12, '2': 0.14}
    assert stock['n'] == 3 and 'diff' not in stock
    assert stock['mean'] == pytest.approx(0.12)
    # deviations -0.02, 0, 0.02: sqrt(0.0008 / 2)
    assert stock['sd'] == pytest.approx(0.02)
    assert gq['mean'] == pytest.approx(0.49 / 3)
    diff = gq['diff']
    assert diff['seeds'] == [0, 1, 2]
    assert diff['values'] == pytest.approx([0.05, 0.02, 0.06])
    d_mean = 0.13 / 3
    d_sd = (0.05 - d_mean) ** 2 + (0.02 - d_mean) ** 2 + (0.06 - d_mean) ** 2
    d_sd = (d_sd / 2) ** 0.5
    assert diff['mean'] == pytest.approx(d_mean)
    assert diff['sd'] == pytest.approx(d_sd) and d_sd == pytest.approx(
        0.0208, abs=1e-4
    )
    assert diff['se'] == pytest.approx(d_sd / 3**0.5)
    assert sweep['variants']['gq'] == dict(
        config=TOY_CONFIG, options=['model.bbox_head.num_classes=3']
    )
    assert sweep['seeds'] == [0, 1, 2] and sweep['missing'] == []
    assert sweep['runs']['gq_s1'] == osp.join(
        'gq_s1', '20240101_000000', 'vis_data', 'scalars.json'
    )

    table = (fake_sweep / 'sweep.md').read_text()
    assert table == tool.render_markdown(sweep) + '\n'
    rows = table.splitlines()
    assert rows[0] == (
        '| variant | metric | per-seed values (seeds 0, 1, 2) | mean ± sd '
        '| paired diff vs stock (mean ± SE) |'
    )
    assert rows[2:] == [
        '| stock | coco/bbox_mAP | 0.100, 0.120, 0.140 | 0.120 ± 0.020 '
        '| baseline |',
        '| gq | coco/bbox_mAP | 0.150, 0.140, 0.200 | 0.163 ± 0.032 '
        '| +0.043 ± 0.012 (n=3) |',
    ]
    assert osp.getsize(fake_sweep / 'sweep_curves.png') > 1000


def test_pick_best_takes_the_highest_value(fake_sweep):
    sweep = tool.main(
        sweep_args(fake_sweep, '--collect-only', '--pick', 'best')
    )
    for variant in ('stock', 'gq'):
        entry = sweep['metrics'][METRIC][variant]
        assert entry['values'] == {'0': 0.3, '1': 0.3, '2': 0.3}
        assert entry['sd'] == 0.0
    assert sweep['pick'] == 'best'
    assert sweep['metrics'][METRIC]['gq']['diff']['mean'] == 0.0


def test_pick_iter_several_picks(fake_sweep):
    """--pick iter=10 last: per-pick values in the JSON (metric -> pick ->
    variant) and a table row per (variant, metric, pick) with a pick
    column; the `last` tables equal those of a one-pick sweep."""
    one = tool.main(sweep_args(fake_sweep, '--collect-only'))
    sweep = tool.main(
        sweep_args(fake_sweep, '--collect-only', '--pick', 'iter=10', 'last')
    )
    assert sweep['pick'] == ['iter=10', 'last']
    by_pick = sweep['metrics'][METRIC]
    assert list(by_pick) == ['iter=10', 'last']
    assert by_pick['last'] == one['metrics'][METRIC]
    early = by_pick['iter=10']
    assert early['stock']['values'] == {'0': 0.3, '1': 0.3, '2': 0.3}
    assert early['gq']['diff']['mean'] == 0.0 and early['gq']['n'] == 3
    rows = tool.render_markdown(sweep).splitlines()
    assert rows[0] == (
        '| variant | metric | pick | per-seed values (seeds 0, 1, 2) '
        '| mean ± sd | paired diff vs stock (mean ± SE) |'
    )
    assert rows[1] == '|---|---|---|---|---|---|'
    assert rows[2:] == [
        '| stock | coco/bbox_mAP | iter=10 | 0.300, 0.300, 0.300 '
        '| 0.300 ± 0.000 | baseline |',
        '| stock | coco/bbox_mAP | last | 0.100, 0.120, 0.140 '
        '| 0.120 ± 0.020 | baseline |',
        '| gq | coco/bbox_mAP | iter=10 | 0.300, 0.300, 0.300 '
        '| 0.300 ± 0.000 | +0.000 ± 0.000 (n=3) |',
        '| gq | coco/bbox_mAP | last | 0.150, 0.140, 0.200 '
        '| 0.163 ± 0.032 | +0.043 ± 0.012 (n=3) |',
    ]
    with open(fake_sweep / 'sweep.json') as f:
        assert json.load(f) == sweep
    # one iter=N pick (written in any form): the one-pick layout, with the
    # pick column
    sweep = tool.main(
        sweep_args(fake_sweep, '--collect-only', '--pick', 'iter=020')
    )
    assert sweep['pick'] == 'iter=20'
    assert sweep['metrics'] == one['metrics']
    assert '| gq | coco/bbox_mAP | iter=20 | 0.150, 0.140, 0.200 |' in (
        tool.render_markdown(sweep)
    )


def test_pick_iter_without_that_validation_is_an_error(fake_sweep):
    """A run never validated at iteration N: an error naming the run and
    the iterations it has (a row silently short of seeds would pass for a
    result)."""
    fake_run(fake_sweep, 'gq_s1', [0.3, 0.14, 0.5])  # validated at 30 too
    with pytest.raises(SystemExit) as e:
        tool.main(
            sweep_args(
                fake_sweep, '--collect-only', '--pick', 'last', 'iter=30'
            )
        )
    msg = str(e.value)
    assert 'run stock_s0' in msg and 'at iteration 30' in msg
    assert 'it has iterations [10, 20]' in msg and f'"{METRIC}"' in msg


def test_merge_with_several_picks(fake_sweep, tmp_path):
    picks = ('--pick', 'iter=10', 'last')
    published = tool.main(sweep_args(fake_sweep, '--collect-only', *picks))
    old_json = str(tmp_path / 'published.json')
    os.replace(fake_sweep / 'sweep.json', old_json)
    work = tmp_path / 'new'
    for variant in ('stock', 'gq'):
        fake_run(work, f'{variant}_s3', [0.3, 0.16])
    seeds = ('0', '1', '2', '3')
    sweep = tool.main(
        sweep_args(
            work, '--collect-only', *picks, '--merge', old_json, seeds=seeds
        )
    )
    for pick in ('iter=10', 'last'):
        gq = sweep['metrics'][METRIC][pick]['gq']
        old = published['metrics'][METRIC][pick]['gq']
        assert gq['n'] == 4
        assert {k: gq['values'][k] for k in '012'} == old['values']
    assert sweep['metrics'][METRIC]['last']['gq']['values']['3'] == 0.16
    with pytest.raises(SystemExit, match='its pick is'):
        tool.main(
            sweep_args(
                work, '--collect-only', '--merge', old_json, seeds=seeds
            )
        )


def test_any_logged_validation_metric(tmp_path):
    """Not only COCO mAP: a classification and a captioning key, by pick;
    an absent key names the keys the run has."""
    for seed, (top1, cider) in enumerate([(0.5, 40.0), (0.7, 44.0)]):
        fake_run(
            tmp_path, f'cls_s{seed}', [0.2, top1], key='cls/accuracy/top1'
        )
        fake_run(
            tmp_path / 'cap',
            f'cap_s{seed}',
            [30.0, cider],
            key='caption/caption/CIDEr-D',
        )
    base = ['--seeds', '0', '1', '--collect-only']
    sweep = tool.main(
        [
            str(tmp_path),
            '--variant',
            'cls',
            TOY_CONFIG,
            *base,
            '--metrics',
            'cls/accuracy/top1',
            '--pick',
            'iter=10',
            'best',
        ]
    )
    table = sweep['metrics']['cls/accuracy/top1']
    assert table['iter=10']['cls']['values'] == {'0': 0.2, '1': 0.2}
    assert table['best']['cls']['mean'] == pytest.approx(0.6)
    assert '| cls | cls/accuracy/top1 | best | 0.500, 0.700 |' in (
        tool.render_markdown(sweep)
    )
    cap = [str(tmp_path / 'cap'), '--variant', 'cap', TOY_CONFIG, *base]
    sweep = tool.main([*cap, '--metrics', 'caption/caption/CIDEr-D'])
    entry = sweep['metrics']['caption/caption/CIDEr-D']['cap']
    assert entry['values'] == {'0': 40.0, '1': 44.0}
    with pytest.raises(SystemExit) as e:
        tool.main([*cap, '--metrics', 'caption/caption/BLEU-4'])
    msg = str(e.value)
    assert 'run cap_s0' in msg and '"caption/caption/BLEU-4"' in msg
    assert "'caption/caption/CIDEr-D'" in msg  # the keys it has


def test_merge_grows_a_published_sweep_by_new_seeds(fake_sweep, tmp_path):
    """Seeds 0-2 published (their work dirs gone), seed 3 run now: the
    merged sweep equals one over all four runs, names the merged runs and
    keeps their curves."""
    published = tool.main(sweep_args(fake_sweep, '--collect-only'))
    assert published['curves']['gq_s2'][METRIC] == [[10, 0.3], [20, 0.2]]
    old_json = str(tmp_path / 'published.json')
    os.replace(fake_sweep / 'sweep.json', old_json)
    work = tmp_path / 'new'
    fake_run(work, 'stock_s3', [0.3, 0.16])
    fake_run(work, 'gq_s3', [0.3, 0.17])
    seeds = ('0', '1', '2', '3')
    sweep = tool.main(
        sweep_args(work, '--collect-only', '--merge', old_json, seeds=seeds)
    )
    gq = sweep['metrics'][METRIC]['gq']
    assert gq['values'] == {'0': 0.15, '1': 0.14, '2': 0.20, '3': 0.17}
    assert gq['diff']['values'] == pytest.approx([0.05, 0.02, 0.06, 0.01])
    assert gq['diff']['n'] == 4
    assert sorted(sweep['merged']) == sorted(
        f'{v}_s{s}' for v in ('stock', 'gq') for s in range(3)
    )
    assert set(sweep['merged'].values()) == {old_json}
    assert sorted(sweep['runs']) == ['gq_s3', 'stock_s3']
    assert sweep['curves']['gq_s1'] == published['curves']['gq_s1']
    assert sweep['missing'] == []
    # a run in WORK wins over the published value of the same pair
    fake_run(work, 'gq_s0', [0.3, 0.25])
    sweep = tool.main(
        sweep_args(work, '--collect-only', '--merge', old_json, seeds=seeds)
    )
    assert sweep['metrics'][METRIC]['gq']['values']['0'] == 0.25
    assert 'gq_s0' not in sweep['merged']


def test_merge_refuses_another_setting(fake_sweep, tmp_path):
    tool.main(sweep_args(fake_sweep, '--collect-only'))
    old_json = str(fake_sweep / 'sweep.json')
    with open(old_json) as f:
        old = json.load(f)
    old['variants']['gq']['options'] = ['model.bbox_head.num_classes=4']
    changed = str(tmp_path / 'changed.json')
    with open(changed, 'w') as f:
        json.dump(old, f)
    work = tmp_path / 'new'
    fake_run(work, 'stock_s3', [0.1])
    with pytest.raises(SystemExit, match='variant gq was .*num_classes=4'):
        tool.main(
            sweep_args(work, '--collect-only', '--merge', changed, seeds='3')
        )
    with pytest.raises(SystemExit, match='its pick is "last"'):
        tool.main(
            sweep_args(
                work, '--collect-only', '--pick', 'best', '--merge', old_json
            )
        )
    with pytest.raises(SystemExit, match='not a sweep.json'):
        tool.main(sweep_args(work, '--collect-only', '--merge', str(tmp_path)))


def test_unfinished_run_left_out_and_one_seed(tmp_path):
    fake_run(tmp_path, 'stock_s0', [0.1])
    fake_run(tmp_path, 'stock_s1', [0.2])
    fake_run(tmp_path, 'gq_s0', [0.4])
    fake_run(tmp_path, 'gq_s1', [0.9], done=False)  # still training
    sweep = tool.main(sweep_args(tmp_path, '--collect-only', seeds=('0', '1')))
    assert sweep['missing'] == ['gq_s1']
    gq = sweep['metrics'][METRIC]['gq']
    assert gq['values'] == {'0': 0.4} and gq['n'] == 1
    assert gq['mean'] == 0.4 and gq['sd'] is None
    assert gq['diff']['seeds'] == [0] and gq['diff']['n'] == 1
    assert gq['diff']['mean'] == pytest.approx(0.3)
    assert gq['diff']['sd'] is None and gq['diff']['se'] is None
    assert '| gq | coco/bbox_mAP | 0.400, — | 0.400 | +0.300 (n=1) |' in (
        tool.render_markdown(sweep)
    )


def test_newest_timestamp_with_scalars(tmp_path):
    fake_run(tmp_path, 'stock_s0', [0.1], stamp='20240101_000000')
    fake_run(tmp_path, 'stock_s0', [0.7], stamp='20240202_000000')
    # a newer start that logged nothing
    os.makedirs(tmp_path / 'stock_s0' / '20240303_000000')
    runs, missing = tool.collect(str(tmp_path), ['stock'], [0], [METRIC])
    assert runs['stock_s0']['values'] == {METRIC: 0.7}
    assert runs['stock_s0']['scalars'].startswith(
        osp.join('stock_s0', '20240202_000000')
    )
    assert missing == []


def test_missing_metric_names_run_and_keys(tmp_path):
    fake_run(tmp_path, 'stock_s0', [0.1], key='det/coco/bbox_mAP')
    with pytest.raises(SystemExit) as e:
        tool.main(
            [
                str(tmp_path),
                '--variant',
                'stock',
                TOY_CONFIG,
                '--collect-only',
            ]
        )
    msg = str(e.value)
    assert 'stock_s0' in msg and f'"{METRIC}"' in msg
    assert "'det/coco/bbox_mAP'" in msg  # the keys it has
    # the multi-task key itself works
    sweep = tool.main(
        [
            str(tmp_path),
            '--variant',
            'stock',
            TOY_CONFIG,
            '--metrics',
            'det/coco/bbox_mAP',
            '--collect-only',
        ]
    )
    assert sweep['metrics']['det/coco/bbox_mAP']['stock']['mean'] == 0.1


def test_nothing_finished_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match='no finished run'):
        tool.main(sweep_args(tmp_path, '--collect-only'))


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--variant', 'a', 'no/such.py'], 'no/such.py'),
        (['--variant', 'a'], 'needs NAME CONFIG'),
        (['--variant', 'a/b', TOY_CONFIG], '"a/b" must be'),
        (
            ['--variant', 'a', TOY_CONFIG, '--variant', 'a', TOY_CONFIG],
            '"a" given twice',
        ),
        (['--variant', 'a', TOY_CONFIG, '--baseline', 'b'], '"b" is not'),
        (['--variant', 'a', TOY_CONFIG, '--seeds', '1', '1'], 'seed given'),
        (['--variant', 'a', TOY_CONFIG, 'lr'], '"lr" is not KEY=VALUE'),
        (
            ['--variant', 'a', TOY_CONFIG, 'randomness.seed=3'],
            'set by the sweep',
        ),
        (['--variant', 'a', TOY_CONFIG, '--readme', 'R.md'], 'go together'),
        (['--variant', 'a', TOY_CONFIG, '--nproc', '0'], '--nproc must be'),
        (['--variant', 'a', TOY_CONFIG, '--pick', 'first'], 'iter=N'),
        (['--variant', 'a', TOY_CONFIG, '--pick', 'iter=0'], 'iter=N'),
        (['--variant', 'a', TOY_CONFIG, '--pick', 'iter=x'], 'iter=N'),
        (
            ['--variant', 'a', TOY_CONFIG, '--pick', 'iter=5', 'iter=05'],
            'pick given twice',
        ),
    ],
)
def test_arguments_checked_first(tmp_path, monkeypatch, argv, message):
    monkeypatch.setattr(tool, 'run_one', lambda *a: pytest.fail('ran'))
    with pytest.raises(SystemExit, match=message):
        tool.main([str(tmp_path), *argv])


def fake_trainer(calls, fail=(), nprocs=None):
    """A ``run_one`` that records its calls (and ``nproc`` in ``nprocs``)
    and logs a fake run."""
    nprocs = [] if nprocs is None else nprocs

    def run_one(config, options, seed, work_dir, log_path, threads=1, nproc=1):
        name = osp.basename(work_dir)
        calls.append((name, config, list(options), seed, threads))
        nprocs.append(nproc)
        with open(log_path, 'w') as f:
            f.write('fake\n')
        if name in fail:
            return 1
        fake_run(osp.dirname(work_dir), name, [0.1 * seed], done=False)
        return 0

    return run_one


def test_resume_runs_only_unfinished(tmp_path, monkeypatch):
    fake_run(tmp_path, 'stock_s0', [0.1])
    fake_run(tmp_path, 'gq_s1', [0.2])
    fake_run(tmp_path, 'gq_s0', [0.9], done=False)  # an interrupted run
    calls = []
    monkeypatch.setattr(tool, 'run_one', fake_trainer(calls))
    argv = sweep_args(tmp_path, '--threads', '3', seeds=('0', '1'))
    sweep = tool.main(argv)
    assert sorted(calls) == [
        ('gq_s0', TOY_CONFIG, ['model.bbox_head.num_classes=3'], 0, 3),
        ('stock_s1', TOY_CONFIG, [], 1, 3),
    ]
    assert osp.isfile(tmp_path / 'gq_s0' / 'done')
    assert sweep['missing'] == []
    assert sweep['metrics'][METRIC]['gq']['values'] == {'0': 0.0, '1': 0.2}
    calls.clear()
    tool.main(argv)  # everything done: nothing runs
    assert calls == []


def test_merge_trains_only_what_is_not_published(
    fake_sweep, tmp_path, monkeypatch
):
    """A new seed (3) and the published seeds 0-2: only seed 3 trains."""
    tool.main(sweep_args(fake_sweep, '--collect-only'))
    old_json = str(fake_sweep / 'sweep.json')
    calls = []
    monkeypatch.setattr(tool, 'run_one', fake_trainer(calls))
    work = tmp_path / 'new'
    sweep = tool.main(
        sweep_args(work, '--merge', old_json, seeds=('0', '1', '2', '3'))
    )
    assert sorted(c[0] for c in calls) == ['gq_s3', 'stock_s3']
    assert sweep['metrics'][METRIC]['stock']['n'] == 4
    assert len(sweep['merged']) == 6


def test_concurrent_sweeps_never_run_a_run_twice(tmp_path, monkeypatch):
    """Two sweeps over one WORK (e.g. seeds 0-2 and, to add a core, seed 2
    alone): a run finished by the other since this sweep started, or being
    run by a live process (its ``.running`` lock), is skipped at launch; a
    lock left by a dead process is taken over."""
    import os

    calls = []
    trainer = fake_trainer(calls)

    def run_one(config, options, seed, work_dir, log_path, threads=1, nproc=1):
        # while stock_s0 trains, "another sweep" finishes stock_s1
        if osp.basename(work_dir) == 'stock_s0':
            fake_run(str(tmp_path), 'stock_s1', [0.5])
        return trainer(config, options, seed, work_dir, log_path, threads)

    monkeypatch.setattr(tool, 'run_one', run_one)
    (tmp_path / 'gq_s0.running').write_text(str(os.getpid()))  # alive
    (tmp_path / 'gq_s1.running').write_text('999999999')  # dead
    tool.main(sweep_args(tmp_path, seeds=('0', '1')))
    assert [c[0] for c in calls] == ['stock_s0', 'gq_s1']
    assert (tmp_path / 'gq_s0.running').exists()  # not ours: left alone
    assert not (tmp_path / 'gq_s1.running').exists()  # released


def test_failed_run_reported_and_sweep_goes_on(tmp_path, monkeypatch):
    calls = []
    fail = {'stock_s1'}
    monkeypatch.setattr(tool, 'run_one', fake_trainer(calls, fail))
    with pytest.raises(SystemExit) as e:
        tool.main(sweep_args(tmp_path, '--jobs', '2', seeds=('0', '1')))
    assert str(tmp_path / 'stock_s1.log') in str(e.value)
    assert len(calls) == 4
    assert not osp.exists(tmp_path / 'stock_s1' / 'done')
    with open(tmp_path / 'sweep.json') as f:
        sweep = json.load(f)
    assert sweep['missing'] == ['stock_s1']
    assert sweep['metrics'][METRIC]['gq']['diff']['seeds'] == [0]
    # rerunning retries the failed run only
    calls.clear()
    fail.clear()
    tool.main(sweep_args(tmp_path, seeds=('0', '1')))
    assert [c[0] for c in calls] == ['stock_s1']


# what every run gets after its launcher, config (and launcher flag)
RUN_ARGS = [
    '--work-dir',
    'w/a_s3',
    '--cfg-options',
    'randomness.seed=3',
    'experiment_name=a_s3',
    'visualizer.name=a_s3',
    'x.y=1',
]


def test_train_command():
    cmd = tool.train_command('c.py', 'w/a_s3', 'a_s3', 3, ['x.y=1'])
    assert cmd[1:] == [tool.TRAIN_SCRIPT, 'c.py', *RUN_ARGS]


def test_train_command_distributed():
    """--nproc 2: the same arguments through torchrun's standalone
    rendezvous (a free port per run) and mmengine's pytorch launcher."""
    cmd = tool.train_command('c.py', 'w/a_s3', 'a_s3', 3, ['x.y=1'], nproc=2)
    assert cmd[1:] == [
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node=2',
        tool.TRAIN_SCRIPT,
        'c.py',
        '--launcher',
        'pytorch',
        *RUN_ARGS,
    ]


def test_nproc_reaches_every_run(tmp_path, monkeypatch):
    calls, nprocs = [], []
    monkeypatch.setattr(tool, 'run_one', fake_trainer(calls, nprocs=nprocs))
    argv = [str(tmp_path), '--variant', 'a', TOY_CONFIG, '--seeds', '0', '1']
    tool.main([*argv, '--nproc', '2', '--metrics', 'coco/bbox_mAP'])
    assert len(calls) == 2 and nprocs == [2, 2]


README = """# Results

Text before.

<!-- sweep:toy -->
an old table
<!-- /sweep:toy -->

Text after.
"""


def test_readme_block_round_trip(fake_sweep):
    readme = fake_sweep / 'README.md'
    readme.write_text(README)
    args = ['--collect-only', '--readme', str(readme), '--section', 'toy']
    tool.main(sweep_args(fake_sweep, *args))
    text = readme.read_text()
    with open(fake_sweep / 'sweep.json') as f:
        table = tool.render_markdown(json.load(f))
    assert tool.readme_block(text, 'toy') == table
    assert text.startswith('# Results\n\nText before.\n\n<!-- sweep:toy -->\n')
    assert text.endswith('\n<!-- /sweep:toy -->\n\nText after.\n')
    assert 'an old table' not in text
    # rewriting is stable
    tool.main(sweep_args(fake_sweep, *args))
    assert readme.read_text() == text

    with pytest.raises(ValueError, match='section "other"'):
        tool.readme_block(text, 'other')
    with pytest.raises(SystemExit) as e:
        tool.main(
            sweep_args(
                fake_sweep,
                '--collect-only',
                '--readme',
                str(readme),
                '--section',
                'other',
            )
        )
    assert str(readme) in str(e.value) and 'sweep:other' in str(e.value)
    assert readme.read_text() == text


def test_real_tiny_sweep(toy_root, tmp_path, monkeypatch):
    """One variant (with an option) x seeds 0, 1 of a 2-iteration
    detector, each run tools/train.py in a subprocess, two at a time (~10 s
    of CPU each, mostly imports); the paired statistics are checked on the
    fake runs above."""
    work = tmp_path / 'sweep'
    cfg = tiny_detector_cfg(toy_root, str(tmp_path / 'unused'), max_iters=2)
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    argv = [
        str(work),
        '--variant',
        'lr1e-3',
        cfg_path,
        'optim_wrapper.optimizer.lr=0.001',
        '--seeds',
        '0',
        '1',
        '--metrics',
        METRIC,
        '--jobs',
        '2',
    ]
    sweep = tool.main(argv)
    for name in ('lr1e-3_s0', 'lr1e-3_s1'):
        assert osp.isfile(work / name / 'done'), work / f'{name}.log'
    for ext in ('json', 'md'):
        assert osp.getsize(work / f'sweep.{ext}') > 100
    assert osp.getsize(work / 'sweep_curves.png') > 1000
    entry = sweep['metrics'][METRIC]['lr1e-3']
    assert entry['n'] == 2
    assert all(0 <= v <= 1 for v in entry['values'].values())
    # each run got its seed and its variant's options
    dumped = (work / 'lr1e-3_s1' / 'tiny.py').read_text()
    assert 'seed=1' in dumped and 'lr=0.001' in dumped
    # run again: all done, nothing trains, the same summary
    monkeypatch.setattr(tool, 'run_one', lambda *a: pytest.fail('reran'))
    assert tool.main(argv) == sweep
