# Copyright (c) mmvfm contributors. All rights reserved.
"""Train config variants over several seeds and summarise their metrics.

A variant is a name, a config and optional ``--cfg-options`` KEY=VALUE
pairs. Every (variant, seed) run is ``tools/train.py`` in a subprocess::

    OMP_NUM_THREADS=<threads> python tools/train.py CONFIG \
        --work-dir WORK/<variant>_s<seed> --cfg-options \
        randomness.seed=<seed> experiment_name=<variant>_s<seed> \
        visualizer.name=<variant>_s<seed> [the variant's KEY=VALUE ...]

with its output in ``WORK/<variant>_s<seed>.log``; one run at a time, or
``--jobs J`` at once; ``--nproc N`` makes each run distributed over N
processes (``torch.distributed.run --standalone``, as tools/dist_train.sh;
``--threads`` is per process). A run that exits 0 gets a
``WORK/<variant>_s<seed>/done`` file and is never run again (rerunning the
command resumes a sweep);
a failed run is reported with its log and the sweep goes on, exiting
non-zero at the end. Example::

    python tools/analysis_tools/seed_sweep.py work_dirs/sweep \
        --variant stock configs/toy/a.py \
        --variant lr1e-3 configs/toy/a.py optim_wrapper.optimizer.lr=0.001 \
        --seeds 0 1 2 --metrics coco/bbox_mAP --baseline stock

A run's value of a metric is read from the newest
``<timestamp>/vis_data/scalars.json`` of its work dir (mmengine's JSON
lines): the last validation entry holding the key (``--pick best``: the
highest one). Keys are as logged, e.g. ``coco/bbox_mAP`` or, for a
multi-task config, ``det/coco/bbox_mAP``. Outputs, in WORK:

- ``sweep.json``: variants (config, options), seeds, and per metric and
  variant the per-seed values, mean, sd (ddof=1) and n, and for each
  variant but the baseline the paired per-seed differences to the
  baseline with their mean, sd and standard error (sd / sqrt(n));
- ``sweep.md``: the table of :func:`render_markdown`;
- ``sweep_curves.png``: each metric's validation curve and the training
  loss, one line per run, a colour per variant.

``--collect-only`` skips training and summarises the finished runs already
in WORK. ``--merge OLD/sweep.json`` fills (variant, seed) pairs that have no
finished run in WORK with the values an earlier sweep published (same
config, options and pick, else an error) and are not trained again: a
published sweep grows by new seeds or variants after its work dirs are
gone. ``sweep.json`` names each merged run
under ``merged`` and keeps every run's validation curves of the chosen
metrics under ``curves``, so merged runs keep theirs in the plot.
``--readme README.md --section NAME`` also rewrites the block
between ``<!-- sweep:NAME -->`` and ``<!-- /sweep:NAME -->`` of that file
with the table, so a README's table is generated from the sweep's JSON
(``readme_block`` reads it back, for tests).
"""

import argparse
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN_SCRIPT = osp.join(REPO_ROOT, 'tools', 'train.py')
sys.path.insert(0, REPO_ROOT)  # mmvfm from a checkout, as tools/train.py
# names become folder names: no separators, no leading dot or dash
SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')
# config keys the sweep sets for every run
SWEEP_KEYS = ('randomness.seed', 'experiment_name', 'visualizer.name')

Series = Dict[str, List[Tuple[float, float]]]  # key -> [(step, value)]

_print_lock = threading.Lock()


def say(msg: str) -> None:
    """A progress line, whole even when runs finish at once."""
    with _print_lock:
        print(f'[seed_sweep {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_name(variant: str, seed: int) -> str:
    return f'{variant}_s{seed}'


# ---------------------------------------------------------------- training
def train_command(
    config: str,
    work_dir: str,
    name: str,
    seed: int,
    options: Sequence[str],
    nproc: int = 1,
) -> List[str]:
    """The tools/train.py command line of one run: one process, or
    ``nproc`` processes through ``torch.distributed.run --standalone``
    (each run its own free rendezvous port, so runs can overlap)."""
    launch = [sys.executable, TRAIN_SCRIPT, config]
    if nproc > 1:
        launch = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--standalone',
            f'--nproc_per_node={nproc}',
            TRAIN_SCRIPT,
            config,
            '--launcher',
            'pytorch',
        ]
    return [
        *launch,
        '--work-dir',
        work_dir,
        '--cfg-options',
        f'randomness.seed={seed}',
        f'experiment_name={name}',
        f'visualizer.name={name}',
        *options,
    ]


def run_one(
    config: str,
    options: Sequence[str],
    seed: int,
    work_dir: str,
    log_path: str,
    threads: int = 1,
    nproc: int = 1,
) -> int:
    """Train one run in a subprocess, its output to ``log_path``
    (``threads`` per process, ``nproc`` processes).

    Returns:
        int: the exit status of tools/train.py (of the launcher if nproc > 1).
    """
    name = osp.basename(osp.normpath(work_dir))
    cmd = train_command(config, work_dir, name, seed, options, nproc)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write(' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return proc.returncode


def _take_lock(path: str) -> bool:
    """Create ``path`` holding this process id, unless a live process
    holds it; a lock left by a dead process is taken over."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(path) as f:
                    os.kill(int(f.read().strip() or 0), 0)
                return False  # its process is alive
            except (OSError, ValueError):
                os.remove(path)  # stale
                continue
        with os.fdopen(fd, 'w') as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_sweep(
    work: str,
    variants: Dict[str, dict],
    seeds: Sequence[int],
    threads: int = 1,
    jobs: int = 1,
    nproc: int = 1,
    published: Sequence[str] = (),
) -> List[str]:
    """Train every (variant, seed) run whose ``done`` file is missing and
    that is not in ``published`` (runs whose values ``--merge`` brings),
    ``jobs`` at a time, each with ``nproc`` processes.

    Returns:
        list[str]: the log paths of the runs that failed.
    """
    todo = []
    for variant, spec in variants.items():
        for seed in seeds:
            name = run_name(variant, seed)
            if osp.isfile(osp.join(work, name, 'done')):
                say(f'skip {name} (done)')
            elif name in published:
                say(f'skip {name} (published: --merge)')
            else:
                todo.append((name, spec, seed))
    if not todo:
        return []
    os.makedirs(work, exist_ok=True)
    say(f'{len(todo)} run(s) to train, {jobs} at a time')

    def launch(index: int, name: str, spec: dict, seed: int):
        run_dir = osp.join(work, name)
        log_path = osp.join(work, f'{name}.log')
        # checked again at launch: another sweep over the same WORK (other
        # seeds, say) may have finished or started this run meanwhile
        if osp.isfile(osp.join(run_dir, 'done')):
            say(f'skip {name} (done meanwhile)')
            return None
        lock = osp.join(work, f'{name}.running')
        if not _take_lock(lock):
            say(f'skip {name} (another sweep is running it: {lock})')
            return None
        say(f'start {name} ({index}/{len(todo)}), log {log_path}')
        start = time.perf_counter()
        try:
            code = run_one(
                spec['config'],
                spec['options'],
                seed,
                run_dir,
                log_path,
                threads,
                nproc,
            )
        except Exception as e:  # a launch error fails this run only
            code, error = -1, f'{type(e).__name__}: {e}'
        else:
            error = f'exit status {code}'
        finally:
            os.remove(lock)
        elapsed = time.perf_counter() - start
        if code == 0:
            os.makedirs(run_dir, exist_ok=True)
            with open(osp.join(run_dir, 'done'), 'w') as f:
                f.write(f'{elapsed:.1f} s\n')
            say(f'finished {name} in {elapsed:.1f} s')
            return None
        say(f'FAILED {name} after {elapsed:.1f} s ({error}), see {log_path}')
        return log_path

    failed = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(launch, i, *task) for i, task in enumerate(todo, 1)
        ]
        for future in as_completed(futures):
            log_path = future.result()
            if log_path is not None:
                failed.append(log_path)
    say(
        f'trained {len(todo) - len(failed)} of {len(todo)} run(s) in '
        f'{time.perf_counter() - start:.1f} s'
    )
    return sorted(failed)


# -------------------------------------------------------------- collecting
def find_scalars(run_dir: str) -> Optional[str]:
    """The scalars.json of the newest timestamp folder that has one."""
    found = sorted(
        glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json'))
    )
    return found[-1] if found else None


def load_scalars(path: str) -> Tuple[Series, Series]:
    """Read a scalars.json into ``(val, train)`` series. Training lines
    carry ``iter``; the others are validation lines."""
    val: Series = {}
    train: Series = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            series = train if 'iter' in entry else val
            step = entry.get('step', entry.get('iter'))
            for key, value in entry.items():
                if key in ('step', 'iter', 'epoch') or not isinstance(
                    value, (int, float)
                ):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return val, train


def collect(
    work: str,
    variants: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str],
    pick: str = 'last',
) -> Tuple[Dict[str, dict], List[str]]:
    """Read every finished run (one with a ``done`` file) of WORK.

    Returns:
        tuple: ``runs`` (run name -> ``variant``, ``seed``, ``scalars``
        path, metric ``values``, ``val`` and ``train`` series) and the
        names of the runs that are not finished.

    Raises:
        ValueError: a finished run without a scalars.json, or without a
            metric (naming the run and the keys it has).
    """
    runs, missing = {}, []
    for variant in variants:
        for seed in seeds:
            name = run_name(variant, seed)
            run_dir = osp.join(work, name)
            if not osp.isfile(osp.join(run_dir, 'done')):
                missing.append(name)
                continue
            path = find_scalars(run_dir)
            if path is None:
                raise ValueError(
                    f'run {name} is done but has no '
                    f'{run_dir}/<timestamp>/vis_data/scalars.json'
                )
            val, train = load_scalars(path)
            values = {}
            for metric in metrics:
                if metric not in val:
                    raise ValueError(
                        f'run {name} has no validation metric "{metric}" '
                        f'in {path}; it has {sorted(val)}'
                    )
                logged = [v for _, v in val[metric]]
                values[metric] = logged[-1] if pick == 'last' else max(logged)
            runs[name] = dict(
                variant=variant,
                seed=seed,
                scalars=osp.relpath(path, work),
                values=values,
                val=val,
                train=train,
            )
    return runs, missing


def load_merged(
    paths: Sequence[str],
    variants: Dict[str, dict],
    seeds: Sequence[int],
    metrics: Sequence[str],
    pick: str,
    have: Sequence[str] = (),
) -> Dict[str, dict]:
    """Runs of earlier ``sweep.json`` files for the (variant, seed) pairs
    not in ``have`` (the first file holding a pair wins).

    Returns:
        dict: run name -> ``variant``, ``seed``, ``merged`` (the file),
        metric ``values``, ``val`` (the curves the file kept, maybe none)
        and an empty ``train``.

    Raises:
        ValueError: naming the file and field: unreadable, another pick,
            a variant with another config or options, or a pair without
            one of the metrics.
    """
    merged: Dict[str, dict] = {}
    for path in paths:
        try:
            with open(path, encoding='utf-8') as f:
                old = json.load(f)
            old_variants, old_metrics = old['variants'], old['metrics']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'--merge {path}: not a sweep.json ({e})'
            ) from None
        if old.get('pick', 'last') != pick:
            raise ValueError(
                f'--merge {path}: its pick is "{old.get("pick")}", this '
                f'sweep\'s is "{pick}"'
            )
        for variant, spec in variants.items():
            if variant not in old_variants:
                continue
            theirs = old_variants[variant]
            if theirs.get('config') != spec['config'] or list(
                theirs.get('options', [])
            ) != list(spec['options']):
                raise ValueError(
                    f'--merge {path}: variant {variant} was '
                    f'{theirs.get("config")} {theirs.get("options", [])}, '
                    f'here {spec["config"]} {spec["options"]}'
                )
            for seed in seeds:
                name = run_name(variant, seed)
                if name in have or name in merged:
                    continue
                values = {}
                for metric in metrics:
                    table = old_metrics.get(metric, {}).get(variant, {})
                    value = table.get('values', {}).get(str(seed))
                    if value is not None:
                        values[metric] = float(value)
                if not values:
                    continue  # the earlier sweep did not run this seed
                if len(values) < len(metrics):
                    lacking = [m for m in metrics if m not in values]
                    raise ValueError(
                        f'--merge {path}: run {name} has no {lacking}'
                    )
                curves = old.get('curves', {}).get(name, {})
                merged[name] = dict(
                    variant=variant,
                    seed=seed,
                    merged=path,
                    values=values,
                    val={k: [tuple(p) for p in v] for k, v in curves.items()},
                    train={},
                )
    return merged


# -------------------------------------------------------------- statistics
def mean_sd(values: Sequence[float]) -> Tuple[Optional[float], ...]:
    """Mean and sample standard deviation (ddof=1; None below 2 values)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def summarize(
    variants: Dict[str, dict],
    seeds: Sequence[int],
    metrics: Sequence[str],
    baseline: str,
    runs: Dict[str, dict],
    missing: Sequence[str] = (),
    pick: str = 'last',
) -> dict:
    """The sweep's JSON-able summary (the layout of ``sweep.json``)."""
    sweep = dict(
        variants={
            k: dict(config=v['config'], options=list(v['options']))
            for k, v in variants.items()
        },
        seeds=list(seeds),
        baseline=baseline,
        pick=pick,
        metrics={},
        runs={k: r['scalars'] for k, r in runs.items() if 'scalars' in r},
        merged={k: r['merged'] for k, r in runs.items() if 'merged' in r},
        missing=list(missing),
        curves={
            k: {m: [list(p) for p in r['val'].get(m, [])] for m in metrics}
            for k, r in runs.items()
        },
    )

    def per_seed(variant: str, metric: str) -> Dict[int, float]:
        return {
            s: runs[run_name(variant, s)]['values'][metric]
            for s in seeds
            if run_name(variant, s) in runs
        }

    for metric in metrics:
        base = per_seed(baseline, metric)
        table = {}
        for variant in variants:
            values = per_seed(variant, metric)
            mean, sd = mean_sd(list(values.values()))
            entry = dict(
                values={str(s): v for s, v in values.items()},
                mean=mean,
                sd=sd,
                n=len(values),
            )
            if variant != baseline:
                paired = [s for s in seeds if s in values and s in base]
                diffs = [values[s] - base[s] for s in paired]
                d_mean, d_sd = mean_sd(diffs)
                entry['diff'] = dict(
                    seeds=paired,
                    values=diffs,
                    mean=d_mean,
                    sd=d_sd,
                    se=None if d_sd is None else d_sd / math.sqrt(len(diffs)),
                    n=len(diffs),
                )
            table[variant] = entry
        sweep['metrics'][metric] = table
    return sweep


# ----------------------------------------------------------------- outputs
def _fmt(x: Optional[float], sign: bool = False) -> str:
    if x is None:
        return '—'
    if abs(x) < 5e-4:
        x = 0.0  # no "-0.000"
    return f'{x:+.3f}' if sign else f'{x:.3f}'


def render_markdown(sweep: dict) -> str:
    """The sweep's markdown table (no trailing newline): a row per variant
    and metric with the per-seed values, mean ± sd and the mean ± standard
    error of the paired differences to the baseline."""
    seeds, baseline = sweep['seeds'], sweep['baseline']
    lines = [
        f'| variant | metric | per-seed values (seeds '
        f'{", ".join(map(str, seeds))}) | mean ± sd | '
        f'paired diff vs {baseline} (mean ± SE) |',
        '|---|---|---|---|---|',
    ]
    for variant in sweep['variants']:
        for metric, table in sweep['metrics'].items():
            entry = table[variant]
            values = ', '.join(
                _fmt(entry['values'].get(str(s))) for s in seeds
            )
            spread = _fmt(entry['mean'])
            if entry['sd'] is not None:
                spread += f' ± {_fmt(entry["sd"])}'
            diff = entry.get('diff')
            if diff is None:
                paired = 'baseline'
            elif diff['n'] == 0:
                paired = '—'
            else:
                paired = _fmt(diff['mean'], sign=True)
                if diff['se'] is not None:
                    paired += f' ± {_fmt(diff["se"])}'
                paired += f' (n={diff["n"]})'
            lines.append(
                f'| {variant} | {metric} | {values} | {spread} | {paired} |'
            )
    return '\n'.join(lines)


def _markers(section: str) -> Tuple[str, str]:
    return f'<!-- sweep:{section} -->', f'<!-- /sweep:{section} -->'


def _block_span(text: str, section: str) -> Tuple[int, int]:
    """Start and end offsets of the text between a section's markers."""
    start, end = _markers(section)
    if text.count(start) != 1 or text.count(end) != 1:
        raise ValueError(
            f'section "{section}" needs one "{start}" and one "{end}" '
            f'marker (found {text.count(start)} and {text.count(end)})'
        )
    i, j = text.index(start) + len(start), text.index(end)
    if j < i:
        raise ValueError(f'section "{section}": "{end}" before "{start}"')
    return i, j


def readme_block(readme_text: str, section: str) -> str:
    """The text between a section's markers, without the newlines around
    it (equal to :func:`render_markdown` of the sweep it was written
    from)."""
    i, j = _block_span(readme_text, section)
    return readme_text[i:j].strip('\n')


def replace_readme_block(readme_text: str, section: str, table: str) -> str:
    """``readme_text`` with a section's block replaced by ``table``."""
    i, j = _block_span(readme_text, section)
    return readme_text[:i] + '\n' + table + '\n' + readme_text[j:]


def write_readme(path: str, section: str, table: str) -> None:
    """Rewrite a section's block of the README at ``path`` in place."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        text = replace_readme_block(text, section, table)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def plot_curves(
    runs: Dict[str, dict],
    variants: Sequence[str],
    metrics: Sequence[str],
    out: str,
) -> None:
    """Each metric's validation curve and the training loss, one line per
    run, a colour per variant; saved as a PNG (Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(metrics) + ['loss']
    fig = Figure(figsize=(5 * len(keys), 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colours = {v: f'C{i % 10}' for i, v in enumerate(variants)}
    for ax, key in zip(axes, keys):
        labelled = set()
        for run in runs.values():
            series = run['train' if key == 'loss' else 'val'].get(key)
            if not series:
                continue
            steps, values = zip(*series)
            variant = run['variant']
            ax.plot(
                steps,
                values,
                color=colours[variant],
                marker='o' if len(steps) < 20 else None,
                linewidth=1,
                alpha=0.8,
                label=None if variant in labelled else variant,
            )
            labelled.add(variant)
        ax.set_title(f'{key} (train)' if key == 'loss' else f'{key} (val)')
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def write_outputs(work: str, sweep: dict, runs: Dict[str, dict]) -> str:
    """Write sweep.json, sweep.md and sweep_curves.png; returns the
    table."""
    os.makedirs(work, exist_ok=True)
    with open(osp.join(work, 'sweep.json'), 'w', encoding='utf-8') as f:
        json.dump(sweep, f, indent=1, ensure_ascii=False)
        f.write('\n')
    table = render_markdown(sweep)
    with open(osp.join(work, 'sweep.md'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    plot_curves(
        runs,
        list(sweep['variants']),
        list(sweep['metrics']),
        osp.join(work, 'sweep_curves.png'),
    )
    return table


# --------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train config variants over seeds and summarise them'
    )
    parser.add_argument(
        'work', metavar='WORK', help='folder of the runs and the outputs'
    )
    parser.add_argument(
        '--variant',
        action='append',
        nargs='+',
        required=True,
        metavar=('NAME CONFIG', 'KEY=VALUE'),
        help='a variant: a name, a config and --cfg-options pairs '
        '(repeat for each variant)',
    )
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        metavar='SEED',
        help='default: 0',
    )
    parser.add_argument(
        '--metrics',
        nargs='+',
        default=['coco/bbox_mAP'],
        help='validation keys as logged (default coco/bbox_mAP)',
    )
    parser.add_argument(
        '--baseline', help='variant to pair the others with (the first)'
    )
    parser.add_argument(
        '--pick',
        choices=['last', 'best'],
        default='last',
        help="a run's value: its last validation value (default) or the "
        'highest',
    )
    parser.add_argument(
        '--threads', type=int, default=1, help='OMP_NUM_THREADS of a run'
    )
    parser.add_argument(
        '--jobs', type=int, default=1, help='runs at once (default 1)'
    )
    parser.add_argument(
        '--nproc',
        type=int,
        default=1,
        help='processes per run (default 1; more: a distributed run through '
        'torch.distributed.run, as tools/dist_train.sh)',
    )
    parser.add_argument(
        '--collect-only',
        action='store_true',
        help='no training: summarise the finished runs in WORK',
    )
    parser.add_argument(
        '--merge',
        nargs='+',
        default=[],
        metavar='SWEEP_JSON',
        help="earlier sweeps' sweep.json: their values fill the pairs "
        'that have no finished run in WORK',
    )
    parser.add_argument('--readme', help='a README to write the table into')
    parser.add_argument(
        '--section', help='NAME of its <!-- sweep:NAME --> block'
    )
    return parser.parse_args(argv)


def check_args(args) -> Dict[str, dict]:
    """Validate the arguments; returns ``{variant: {config, options}}``.

    Raises:
        ValueError: naming the bad argument.
    """
    from mmvfm.utils import resolve_config_path

    variants: Dict[str, dict] = {}
    for name, *rest in args.variant:
        if not rest:
            raise ValueError(f'--variant {name}: needs NAME CONFIG')
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(
                f'variant name "{name}" must be letters, digits and '
                '"_.+-" (it names folders)'
            )
        if name in variants:
            raise ValueError(f'variant name "{name}" given twice')
        config, options = rest[0], rest[1:]
        try:
            resolve_config_path(config)
        except FileNotFoundError as e:
            raise ValueError(f'variant {name}: {e}') from None
        for option in options:
            key = option.partition('=')[0]
            if '=' not in option or not key:
                raise ValueError(
                    f'variant {name}: option "{option}" is not KEY=VALUE'
                )
            if key in SWEEP_KEYS or key == 'work_dir':
                raise ValueError(
                    f'variant {name}: "{key}" is set by the sweep per run'
                )
        variants[name] = dict(config=config, options=options)
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f'--seeds {args.seeds}: a seed given twice')
    if any(s < 0 for s in args.seeds):
        raise ValueError(f'--seeds {args.seeds}: seeds must be >= 0')
    if len(set(args.metrics)) != len(args.metrics):
        raise ValueError(f'--metrics {args.metrics}: a metric given twice')
    if args.baseline is None:
        args.baseline = next(iter(variants))
    elif args.baseline not in variants:
        raise ValueError(
            f'--baseline "{args.baseline}" is not a variant '
            f'({", ".join(variants)})'
        )
    if args.threads < 1 or args.jobs < 1 or args.nproc < 1:
        raise ValueError('--threads, --jobs and --nproc must be >= 1')
    if (args.readme is None) != (args.section is None):
        raise ValueError('--readme and --section go together')
    if args.readme is not None and not osp.isfile(args.readme):
        raise ValueError(f'--readme "{args.readme}" does not exist')
    return variants


def main(argv=None) -> dict:
    """Returns the sweep summary (as written to sweep.json).

    Raises:
        SystemExit: on bad arguments, unreadable runs, or (after writing
            the outputs) when a run failed.
    """
    args = parse_args(argv)
    try:
        variants = check_args(args)
    except ValueError as e:
        raise SystemExit(f'error: {e}') from None
    # the published runs --merge brings for the pairs not finished in WORK:
    # read once, checked before anything trains, never trained again
    merged: Dict[str, dict] = {}
    if args.merge:
        done = [
            run_name(v, s)
            for v in variants
            for s in args.seeds
            if osp.isfile(osp.join(args.work, run_name(v, s), 'done'))
        ]
        try:
            merged = load_merged(
                args.merge,
                variants,
                args.seeds,
                args.metrics,
                args.pick,
                have=done,
            )
        except ValueError as e:
            raise SystemExit(f'error: {e}') from None
    failed = []
    if not args.collect_only:
        failed = run_sweep(
            args.work,
            variants,
            args.seeds,
            args.threads,
            args.jobs,
            args.nproc,
            list(merged),
        )
    try:
        runs, missing = collect(
            args.work, list(variants), args.seeds, args.metrics, args.pick
        )
        if args.merge:
            # a run finished in WORK meanwhile wins over its published value
            runs.update({k: r for k, r in merged.items() if k not in runs})
            missing = [m for m in missing if m not in runs]
            say(
                f'merged from {", ".join(args.merge)}: '
                + (', '.join(n for n in runs if 'merged' in runs[n]) or 'none')
            )
        if not runs:
            raise ValueError(f'no finished run in {args.work}')
        if missing:
            say(f'not finished (left out): {", ".join(missing)}')
        sweep = summarize(
            variants,
            args.seeds,
            args.metrics,
            args.baseline,
            runs,
            missing,
            args.pick,
        )
        table = write_outputs(args.work, sweep, runs)
        if args.readme is not None:
            write_readme(args.readme, args.section, table)
            say(f'updated section "{args.section}" of {args.readme}')
    except ValueError as e:
        raise SystemExit(f'error: {e}') from None
    print(table)
    say(f'wrote sweep.json, sweep.md and sweep_curves.png in {args.work}')
    if failed:
        raise SystemExit(
            f'error: {len(failed)} run(s) failed, see ' + ', '.join(failed)
        )
    return sweep


if __name__ == '__main__':
    main()
