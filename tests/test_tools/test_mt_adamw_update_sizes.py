# Copyright (c) mmvfm contributors. All rights reserved.
"""The update-size table in Uni-Perceiver v2's README is what
``tools/analysis_tools/mt_adamw_update_sizes.py`` prints, and its findings
hold: 'decay' changes only the task-only parameters, bias correction
brings both modes near AdamW's size times 1/sqrt(s)."""

import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools/analysis_tools/mt_adamw_update_sizes.py')


@pytest.fixture(scope='module')
def table():
    out = subprocess.run(
        [sys.executable, TOOL],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    ).stdout
    return [line for line in out.splitlines() if line.startswith('|')]


def test_readme_shows_the_tools_table(table):
    with open(osp.join(REPO, 'configs/uniperceiver_v2/README.md')) as f:
        readme = f.read().splitlines()
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table


def test_what_the_readme_reads_from_it(table):
    rows = {
        r.split('|')[1].strip(): [float(c) for c in r.split('|')[2:-1]]
        for r in table[2:]
    }
    adamw = rows['AdamW']
    skip_bc = rows["MT-AdamW 'skip' + bias corr."]
    decay_bc = rows["MT-AdamW 'decay' + bias corr."]
    # the shared parameter (even columns) has a gradient every step
    assert rows["MT-AdamW 'skip'"][0::2] == rows["MT-AdamW 'decay'"][0::2]
    for shared, base in zip(skip_bc[0::2], adamw[0::2]):
        assert 1.8 < shared / base < 2.8  # ~1/sqrt(0.2) = 2.24
    # without bias correction the early steps are several times larger
    assert rows["MT-AdamW 'skip'"][0] > 4 * skip_bc[0]
    # 'decay' shrinks the task-only steps of 'skip' at every point
    assert all(d < s for d, s in zip(decay_bc[1::2], skip_bc[1::2]))
