# Copyright (c) mmvfm contributors. All rights reserved.
"""Reporting a sweep: the markdown table of its JSON, the README block it
is written into (``<!-- sweep:NAME -->`` ... ``<!-- /sweep:NAME -->``), the
validation curves plot and the files of WORK."""

import json
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

from .collect import pick_list, pick_tables


def _fmt(x: Optional[float], sign: bool = False) -> str:
    if x is None:
        return '—'
    if abs(x) < 5e-4:
        x = 0.0  # no "-0.000"
    return f'{x:+.3f}' if sign else f'{x:.3f}'


def _pick_shown(sweep: dict) -> bool:
    """Whether the table has a pick column: several picks, or one
    ``iter=N`` (a ``last`` or ``best`` sweep renders as before picks
    existed)."""
    picks = pick_list(sweep.get('pick', 'last'))
    return len(picks) > 1 or picks[0] not in ('last', 'best')


def _paired(diff: Optional[dict]) -> str:
    if diff is None:
        return 'baseline'
    if diff['n'] == 0:
        return '—'
    paired = _fmt(diff['mean'], sign=True)
    if diff['se'] is not None:
        paired += f' ± {_fmt(diff["se"])}'
    return paired + f' (n={diff["n"]})'


def render_markdown(sweep: dict) -> str:
    """The sweep's markdown table (no trailing newline): a row per variant,
    metric (and pick) with the per-seed values, mean ± sd and the mean ±
    standard error of the paired differences to the baseline. The pick
    (``iter=N``, ``last``, ``best``) has a column when the sweep has
    several picks or an ``iter=N`` one."""
    seeds, baseline = sweep['seeds'], sweep['baseline']
    shown = _pick_shown(sweep)
    pick_head, pick_rule = ('pick | ', '---|') if shown else ('', '')
    lines = [
        f'| variant | metric | {pick_head}per-seed values (seeds '
        f'{", ".join(map(str, seeds))}) | mean ± sd | '
        f'paired diff vs {baseline} (mean ± SE) |',
        f'|---|---|{pick_rule}---|---|---|',
    ]
    tables = list(pick_tables(sweep))
    for variant in sweep['variants']:
        for metric, pick, table in tables:
            entry = table[variant]
            values = ', '.join(
                _fmt(entry['values'].get(str(s))) for s in seeds
            )
            spread = _fmt(entry['mean'])
            if entry['sd'] is not None:
                spread += f' ± {_fmt(entry["sd"])}'
            cells = [variant, metric, *([pick] if shown else [])]
            cells += [values, spread, _paired(entry.get('diff'))]
            lines.append('| ' + ' | '.join(cells) + ' |')
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
