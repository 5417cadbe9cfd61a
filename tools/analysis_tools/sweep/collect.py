# Copyright (c) mmvfm contributors. All rights reserved.
"""Collecting a sweep: each finished run's validation values read from its
``<timestamp>/vis_data/scalars.json``, the values ``--merge`` brings from
earlier sweeps, and the statistics of ``sweep.json`` (mean, sd, paired
differences to the baseline and their standard error).

A pick says which validation of a run gives its value: ``last``, ``best``
(the highest) or ``iter=N`` (the validation logged at step N: the
iteration, as mmengine's ``LoggerHook(log_metric_by_epoch=False)`` logs
it). A sweep has one pick (a string, the ``sweep.json`` of old) or several
(a list): see :func:`summarize` for the layout.
"""

import glob
import json
import math
import os.path as osp
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .runner import run_name

Series = Dict[str, List[Tuple[float, float]]]  # key -> [(step, value)]
Pick = Union[str, List[str]]  # one pick, or several
ITER_PICK = re.compile(r'iter=(\d+)')


def parse_pick(text: str) -> str:
    """A ``--pick`` value in its canonical form (``iter=0100`` ->
    ``iter=100``).

    Raises:
        ValueError: not ``last``, ``best`` or ``iter=N`` with N >= 1.
    """
    if text in ('last', 'best'):
        return text
    match = ITER_PICK.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(
            f'--pick "{text}": must be last, best or iter=N (N >= 1, the '
            'iteration of a validation)'
        )
    return f'iter={int(match.group(1))}'


def pick_list(pick: Pick) -> List[str]:
    """A sweep's picks as a list (one pick is a string)."""
    return [pick] if isinstance(pick, str) else list(pick)


def find_scalars(run_dir: str) -> Optional[str]:
    """The scalars.json of the newest timestamp folder that has one."""
    found = sorted(
        glob.glob(osp.join(run_dir, '*', 'vis_data', 'scalars.json'))
    )
    return found[-1] if found else None


def load_scalars(path: str) -> Tuple[Series, Series]:
    """Read a scalars.json into ``(val, train)`` series. Training lines
    carry ``iter``; the others are validation lines (every numeric key:
    ``coco/bbox_mAP``, ``accuracy/top1``, ``caption/caption/CIDEr-D``, a
    multi-task config's ``det/coco/bbox_mAP``...)."""
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


def pick_value(
    series: List[Tuple[float, float]], pick: str, where: str
) -> float:
    """The value of one metric's validation ``series`` that ``pick``
    chooses (for ``iter=N``, the last one logged at step N: a resumed run
    may have validated it twice).

    Raises:
        ValueError: ``iter=N`` and no validation at step N, naming
            ``where`` (the run and metric) and the steps it has.
    """
    if pick == 'last':
        return series[-1][1]
    if pick == 'best':
        return max(v for _, v in series)
    step = int(pick[len('iter=') :])
    at = [v for s, v in series if s is not None and int(s) == step]
    if not at:
        steps = [int(s) for s, _ in series if s is not None]
        raise ValueError(
            f'{where} has no validation at iteration {step} (--pick '
            f'{pick}); it has iterations {steps}'
        )
    return at[-1]


def run_values(
    val: Series, metrics: Sequence[str], pick: Pick, name: str, path: str
) -> dict:
    """A run's ``values``: metric -> value (one pick) or metric -> pick ->
    value (several).

    Raises:
        ValueError: a metric not logged (naming the run and the keys it
            has) or a validation ``iter=N`` lacks.
    """
    values = {}
    for metric in metrics:
        if metric not in val:
            raise ValueError(
                f'run {name} has no validation metric "{metric}" in {path}; '
                f'it has {sorted(val)}'
            )
        where = f'run {name} ({path}), metric "{metric}",'
        by_pick = {
            p: pick_value(val[metric], p, where) for p in pick_list(pick)
        }
        values[metric] = by_pick[pick] if isinstance(pick, str) else by_pick
    return values


def collect(
    work: str,
    variants: Sequence[str],
    seeds: Sequence[int],
    metrics: Sequence[str],
    pick: Pick = 'last',
) -> Tuple[Dict[str, dict], List[str]]:
    """Read every finished run (one with a ``done`` file) of WORK.

    Returns:
        tuple: ``runs`` (run name -> ``variant``, ``seed``, ``scalars``
        path, metric ``values`` as :func:`run_values`, ``val`` and
        ``train`` series) and the names of the runs that are not finished.

    Raises:
        ValueError: a finished run without a scalars.json, without a
            metric (naming the run and the keys it has), or without the
            validation an ``iter=N`` pick asks for (naming the run and the
            iterations it has).
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
            runs[name] = dict(
                variant=variant,
                seed=seed,
                scalars=osp.relpath(path, work),
                values=run_values(val, metrics, pick, name, path),
                val=val,
                train=train,
            )
    return runs, missing


def pick_tables(sweep: dict) -> Iterator[Tuple[str, str, Dict[str, dict]]]:
    """``(metric, pick, {variant: entry})`` for each metric and pick of a
    sweep's JSON, either layout (one pick or several)."""
    pick = sweep.get('pick', 'last')
    for metric, table in sweep['metrics'].items():
        if isinstance(pick, str):
            yield metric, pick, table
        else:
            for p in pick:
                yield metric, p, table[p]


def load_merged(
    paths: Sequence[str],
    variants: Dict[str, dict],
    seeds: Sequence[int],
    metrics: Sequence[str],
    pick: Pick,
    have: Sequence[str] = (),
) -> Dict[str, dict]:
    """Runs of earlier ``sweep.json`` files for the (variant, seed) pairs
    not in ``have`` (the first file holding a pair wins).

    Returns:
        dict: run name -> ``variant``, ``seed``, ``merged`` (the file),
        metric ``values`` (as :func:`run_values`), ``val`` (the curves the
        file kept, maybe none) and an empty ``train``.

    Raises:
        ValueError: naming the file and field: unreadable, other picks,
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
                found = {}  # (metric, pick) -> value
                for metric in metrics:
                    table = old_metrics.get(metric, {})
                    for p in pick_list(pick):
                        entry = (
                            table
                            if isinstance(pick, str)
                            else table.get(p, {})
                        ).get(variant, {})
                        value = entry.get('values', {}).get(str(seed))
                        if value is not None:
                            found[metric, p] = float(value)
                if not found:
                    continue  # the earlier sweep did not run this seed
                wanted = [(m, p) for m in metrics for p in pick_list(pick)]
                if len(found) < len(wanted):
                    lacking = sorted(
                        {m for m, p in wanted if (m, p) not in found}
                    )
                    raise ValueError(
                        f'--merge {path}: run {name} has no {lacking}'
                    )
                values = {
                    m: found[m, pick]
                    if isinstance(pick, str)
                    else {p: found[m, p] for p in pick}
                    for m in metrics
                }
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


def variant_table(
    variants: Sequence[str],
    seeds: Sequence[int],
    baseline: str,
    per_seed: Dict[str, Dict[int, float]],
) -> Dict[str, dict]:
    """One metric's (and pick's) ``{variant: entry}``: the per-seed
    ``values``, ``mean``, ``sd`` and ``n``, and for each variant but the
    baseline the paired ``diff`` to it (seeds, values, mean, sd, se, n)."""
    base = per_seed[baseline]
    table = {}
    for variant in variants:
        values = per_seed[variant]
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
    return table


def summarize(
    variants: Dict[str, dict],
    seeds: Sequence[int],
    metrics: Sequence[str],
    baseline: str,
    runs: Dict[str, dict],
    missing: Sequence[str] = (),
    pick: Pick = 'last',
) -> dict:
    """The sweep's JSON-able summary (the layout of ``sweep.json``).

    ``metrics`` maps metric -> variant -> entry (:func:`variant_table`)
    when ``pick`` is one pick (a string, as every sweep before ``iter=N``),
    and metric -> pick -> variant -> entry when it is a list of several;
    :func:`pick_tables` reads either.
    """
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

    def table(metric: str, p: Optional[str]) -> Dict[str, dict]:
        per_seed = {}
        for variant in variants:
            per_seed[variant] = {}
            for s in seeds:
                run = runs.get(run_name(variant, s))
                if run is not None:
                    value = run['values'][metric]
                    per_seed[variant][s] = value if p is None else value[p]
        return variant_table(list(variants), seeds, baseline, per_seed)

    for metric in metrics:
        sweep['metrics'][metric] = (
            table(metric, None)
            if isinstance(pick, str)
            else {p: table(metric, p) for p in pick}
        )
    return sweep
