# Copyright (c) mmvfm contributors. All rights reserved.
"""Every published seed sweep is the table its README shows: for each
``configs/<algo>/sweep_<name>.json``, the ``<!-- sweep:<name> -->`` block of
``configs/<algo>/README.md`` equals the table that
``tools/analysis_tools/seed_sweep.py`` renders from that JSON."""

import glob
import json
import os.path as osp
import re

import pytest
from conftest import REPO_ROOT, load_tool

SWEEPS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '*', 'sweep_*.json')))


def test_some_sweeps_are_published():
    assert SWEEPS, 'no configs/*/sweep_*.json found'


@pytest.mark.parametrize(
    'path', SWEEPS, ids=[osp.relpath(p, REPO_ROOT) for p in SWEEPS]
)
def test_readme_table_matches_its_json(path):
    tool = load_tool('analysis_tools/seed_sweep.py')
    section = osp.basename(path)[len('sweep_') : -len('.json')]
    with open(path) as f:
        sweep = json.load(f)
    with open(osp.join(osp.dirname(path), 'README.md')) as f:
        readme = f.read()
    assert tool.readme_block(readme, section) == tool.render_markdown(sweep)
    # three seeds or more behind every published row
    for metric, pick, variants in tool.pick_tables(sweep):
        for name, entry in variants.items():
            assert entry['n'] >= 3, (path, metric, pick, name, entry['n'])


OOD = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '*', 'ood_*.json')))


@pytest.mark.parametrize(
    'path', OOD, ids=[osp.relpath(p, REPO_ROOT) for p in OOD]
)
def test_readme_ood_table_matches_its_json(path):
    """An out-of-domain evaluation (``visft_ood_eval.py``'s
    ``ood_eval.json``, published as ``ood_<name>.json``) is the
    ``<!-- ood:<name> -->`` block of its README, with 3 tuned runs or more.
    """
    ood_tool = load_tool('analysis_tools/visft_ood_eval.py')
    section = osp.basename(path)[len('ood_') : -len('.json')]
    with open(path) as f:
        result = json.load(f)
    with open(osp.join(osp.dirname(path), 'README.md')) as f:
        readme = f.read()
    block = readme.split(f'<!-- ood:{section} -->\n', 1)[1]
    block = block.split(f'<!-- /ood:{section} -->', 1)[0]
    assert block.strip() == ood_tool.render_markdown(result).strip()
    assert len(result['tuned']) >= 3


READMES = sorted(
    glob.glob(osp.join(REPO_ROOT, 'configs', '*', 'README.md'))
    + glob.glob(
        osp.join(REPO_ROOT, 'projects', '**', 'README.md'), recursive=True
    )
    + [osp.join(REPO_ROOT, 'README.md')]
)


@pytest.mark.parametrize(
    'path', READMES, ids=[osp.relpath(p, REPO_ROOT) for p in READMES]
)
def test_readme_relative_links_exist(path):
    """Every relative link of a README (a sweep's JSON and curves, a config)
    names a file of the repository; code spans and blocks are not links."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    text = re.sub(r'`[^`\n]*`', '', text)
    missing = []
    for link in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', text):
        if '://' in link or link.startswith('mailto:'):
            continue
        if not osp.exists(osp.join(osp.dirname(path), link)):
            missing.append(link)
    assert missing == [], (osp.relpath(path, REPO_ROOT), missing)


def _status_line(readme_path: str) -> str:
    with open(readme_path) as f:
        found = re.findall(r'^\*\*Status:\*\* (.*?)\.?$', f.read(), re.M)
    assert len(found) == 1, f'{readme_path}: one "**Status:** ..." line'
    return found[0]


def test_method_table_status_matches_each_algorithm_readme():
    """README.md's method table says of each method what the method's own
    README says, word for word (its ``**Status:**`` line)."""
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        readme = f.read()
    table = readme.split('| Method | Paper | Status |', 1)[1]
    table = table.split('\n\n', 1)[0]
    rows = [r for r in table.splitlines() if r.startswith('| ')]
    linked = set()
    for row in rows:
        status = row.rstrip(' |').rsplit(' | ', 1)[1]
        match = re.fullmatch(r'\[(.*)\]\((configs/\w+/README\.md)\)', status)
        assert match, (
            f'status cell is not [<status>](configs/<algo>/...): {row}'
        )
        text, path = match.groups()
        assert text == _status_line(osp.join(REPO_ROOT, path)), path
        linked.add(path)
    algos = {
        osp.relpath(p, REPO_ROOT)
        for p in glob.glob(osp.join(REPO_ROOT, 'configs', '*', 'README.md'))
        if not p.endswith(osp.join('toy', 'README.md'))
    }
    assert linked == algos, 'every algorithm folder has a row'
