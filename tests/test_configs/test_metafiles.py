# Copyright (c) mmvfm contributors. All rights reserved.
"""model-index.yml and the metafiles it imports (what ``mim search``
shows).

Every algorithm folder has a metafile in the index; every path in it
exists; Results hold only what mmvfm measured, each entry saying how
(``Measured``) and with what command (``Command``); a paper's numbers are
separate entries named ``*_paper``, without a Config, whose Datasets end in
``(paper)`` and whose ``Source`` names the paper, so that ``mim search``
can never show one as a result of one of our configs.
"""

import glob
import importlib.util
import os.path as osp
import re

import pytest
import yaml

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PAPER_SUFFIX = '_paper'
PAPER_DATASET = '(paper)'


def index_imports() -> list:
    with open(osp.join(REPO_ROOT, 'model-index.yml')) as f:
        return yaml.safe_load(f)['Import']


def load(metafile: str) -> dict:
    with open(osp.join(REPO_ROOT, metafile)) as f:
        return yaml.safe_load(f)


def all_models() -> list:
    """``(metafile, model dict)`` of every model in the index."""
    return [
        (metafile, model)
        for metafile in index_imports()
        for model in load(metafile)['Models']
    ]


def config_paths(text: str) -> list:
    return re.findall(r'configs/[\w./-]+\.py', text)


def test_every_algorithm_folder_has_a_metafile_in_the_index():
    listed = set(index_imports())
    for readme in sorted(
        glob.glob(osp.join(REPO_ROOT, 'configs/*/README.md'))
    ):
        folder = osp.relpath(osp.dirname(readme), REPO_ROOT)
        metafile = f'{folder}/metafile.yml'
        assert osp.isfile(osp.join(REPO_ROOT, metafile)), metafile
        assert metafile in listed, f'{metafile} is not in model-index.yml'
    for metafile in listed:
        assert osp.isfile(osp.join(REPO_ROOT, metafile)), metafile


def test_metafile_paths_exist_and_names_are_unique():
    names = set()
    for metafile in index_imports():
        meta = load(metafile)
        collections = {c['Name'] for c in meta['Collections']}
        for collection in meta['Collections']:
            readme = collection.get('README')
            assert readme is None or osp.isfile(osp.join(REPO_ROOT, readme))
        for model in meta['Models']:
            name = model['Name']
            assert name not in names, f'{name} twice'
            names.add(name)
            assert model['In Collection'] in collections, name
            paths = [model['Config']] if 'Config' in model else []
            for value in (model.get('Metadata') or {}).values():
                paths += config_paths(str(value))
            for path in paths:
                assert osp.isfile(osp.join(REPO_ROOT, path)), (name, path)


def test_results_are_measured_or_separate_paper_entries():
    for metafile, model in all_models():
        name, meta = model['Name'], model.get('Metadata') or {}
        results = model.get('Results') or []
        datasets = [r['Dataset'] for r in results]
        if name.endswith(PAPER_SUFFIX):
            assert 'Config' not in model, (
                f'{name}: a paper entry has no Config'
            )
            assert str(meta.get('Source', '')).startswith('paper'), name
            assert 'not measured' in meta['Source'], name
            assert results, name
            assert all(d.endswith(PAPER_DATASET) for d in datasets), name
        else:
            assert 'Config' in model, name
            assert not any('paper' in d.lower() for d in datasets), name
            if results:  # measured: how, and the command
                assert str(meta.get('Measured', '')).startswith('by mmvfm'), (
                    metafile,
                    name,
                )
                assert config_paths(str(meta.get('Command', ''))), name


def test_no_result_value_carries_a_comment():
    """A comment beside a metric (``box AP: 40.7  # paper``) is lost on the
    way to ``mim search``, which then shows the value as ours."""
    for metafile in index_imports():
        with open(osp.join(REPO_ROOT, metafile)) as f:
            lines = f.read().splitlines()
        results_indent = None
        for number, line in enumerate(lines, 1):
            indent = len(line) - len(line.lstrip())
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            if results_indent is not None and indent <= results_indent:
                results_indent = None
            if line.strip() == 'Results:':
                results_indent = indent
            elif results_indent is not None:
                assert '#' not in line, f'{metafile}:{number}: {line.strip()}'
            assert not re.search(r':\s*[-+0-9.]+\s*#.*paper', line, re.I), (
                f'{metafile}:{number}: {line.strip()}'
            )


@pytest.mark.skipif(
    importlib.util.find_spec('mim') is None, reason='openmim not installed'
)
def test_mim_reads_the_index_and_every_collection():
    """What ``mim search mmvfm [--model NAME]`` does, on the checkout's
    index (tests/test_tools/test_mim.py runs the command itself)."""
    from mim.commands.search import convert2df, filter_by_models
    from modelindex.load_model_index import load as load_index

    frame = convert2df(load_index(osp.join(REPO_ROOT, 'model-index.yml')))
    assert set(frame.index) == {m['Name'] for _, m in all_models()}
    for metafile in index_imports():
        meta = load(metafile)
        for collection in meta['Collections']:
            selected = filter_by_models(frame, [collection['Name']])
            expected = {
                m['Name']
                for m in meta['Models']
                if m['In Collection'] == collection['Name']
            }
            assert set(selected.index) == expected, collection['Name']
    # a paper value is never in a column of a dataset we measured on
    paper_columns = {c for c in frame.columns if PAPER_DATASET in c}
    ours = frame.drop(
        index=[n for n in frame.index if n.endswith(PAPER_SUFFIX)]
    )
    assert ours[sorted(paper_columns)].isna().all().all()
