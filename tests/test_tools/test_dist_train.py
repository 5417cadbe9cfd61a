# Copyright (c) mmvfm contributors. All rights reserved.
"""`tools/dist_train.sh CONFIG 2` on the CPU: gloo, 2 ranks, real DDP."""

import json
import os
import os.path as osp
import socket
import subprocess
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_processes(tiny_cfg, tmp_path):
    cfg = tiny_cfg(max_iters=2, batch_size=2)
    probe_dir = str(tmp_path / 'probe')
    cfg.custom_imports = dict(
        imports=['mmvfm', 'ddp_probe_hook'], allow_failed_imports=False
    )
    cfg.custom_hooks = [dict(type='DDPProbeHook', out_dir=probe_dir)]
    cfg_path = str(tmp_path / 'ddp_cfg.py')
    cfg.dump(cfg_path)

    env = dict(os.environ)
    env.update(
        PORT=str(free_port()),
        PYTHON=sys.executable,
        OMP_NUM_THREADS='1',
        PYTHONPATH=osp.join(REPO_ROOT, 'tests', 'data')
        + os.pathsep
        + env.get('PYTHONPATH', ''),
    )
    proc = subprocess.run(
        ['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), cfg_path, '2'],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = []
    for rank in (0, 1):
        with open(osp.join(probe_dir, f'rank{rank}.json')) as f:
            records.append(json.load(f))
    for rank, rec in enumerate(records):
        assert rec['rank'] == rank
        assert rec['world_size'] == 2
        assert rec['wrapper'] == 'MMDistributedDataParallel'
        assert len(rec['digests']) == 2
        assert 'coco/bbox_mAP' in rec['metrics']
    # identical parameters on both ranks after every step
    assert records[0]['digests'] == records[1]['digests']
    # the parameters changed between the two steps
    assert records[0]['digests'][0] != records[0]['digests'][1]
    # evaluation split across the ranks: 8 val images, 4 each
    assert [rec['val_images'] for rec in records] == [4, 4]
    assert records[0]['metrics'] == records[1]['metrics']
