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
highest one; ``--pick iter=N``: the validation at iteration N, an error
naming the run and its validation iterations if it has none there).
Several picks (``--pick iter=100 iter=300 last``) give each (variant,
metric) a row per pick. Keys are any validation metric as logged, e.g.
``coco/bbox_mAP``, ``accuracy/top1``, ``caption/caption/CIDEr-D`` or, for
a multi-task config, ``det/coco/bbox_mAP`` (a missing key is an error
listing the run's keys). Outputs, in WORK:

- ``sweep.json``: variants (config, options), seeds, pick (a string, or a
  list for several picks), and per metric (and pick) and variant the
  per-seed values, mean, sd (ddof=1) and n, and for each variant but the
  baseline the paired per-seed differences to the baseline with their
  mean, sd and standard error (sd / sqrt(n));
- ``sweep.md``: the table of :func:`render_markdown` (with a pick column
  for several picks or an ``iter=N`` one);
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

The parts live in ``sweep/`` next to this file: ``sweep.runner`` (the
training subprocesses), ``sweep.collect`` (values and statistics) and
``sweep.report`` (table, README block, plot); this file is the CLI and
re-exports their names.
"""

import argparse
import os.path as osp
import re
import sys
from typing import Dict

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)  # mmvfm from a checkout, as tools/train.py
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # sweep/

from sweep.collect import (  # noqa: E402, F401  (re-exported)
    Series,
    collect,
    find_scalars,
    load_merged,
    load_scalars,
    mean_sd,
    parse_pick,
    pick_tables,
    summarize,
)
from sweep.report import (  # noqa: E402, F401  (re-exported)
    plot_curves,
    readme_block,
    render_markdown,
    replace_readme_block,
    write_outputs,
    write_readme,
)
from sweep.runner import (  # noqa: E402, F401  (re-exported)
    REPO_ROOT,
    TRAIN_SCRIPT,
    run_name,
    run_one,
    run_sweep,
    say,
    train_command,
)

# names become folder names: no separators, no leading dot or dash
SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')
# config keys the sweep sets for every run
SWEEP_KEYS = ('randomness.seed', 'experiment_name', 'visualizer.name')


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
        help='validation keys as logged, any metric (default coco/bbox_mAP; '
        'e.g. accuracy/top1, caption/caption/CIDEr-D, det/coco/bbox_mAP)',
    )
    parser.add_argument(
        '--baseline', help='variant to pair the others with (the first)'
    )
    parser.add_argument(
        '--pick',
        nargs='+',
        default=['last'],
        metavar='PICK',
        help="a run's value: its last validation value (last, the default), "
        'the highest (best) or the one at iteration N (iter=N); several '
        '(e.g. iter=100 iter=300 last) give a table row per pick',
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
    ``args.pick`` becomes one pick (a string) or a list of several, in
    canonical form.

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
    picks = [parse_pick(p) for p in args.pick]
    if len(set(picks)) != len(picks):
        raise ValueError(f'--pick {args.pick}: a pick given twice')
    # one pick stays a string: the sweep.json of old
    args.pick = picks[0] if len(picks) == 1 else picks
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
            run=run_one,  # looked up here: tests replace it
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
