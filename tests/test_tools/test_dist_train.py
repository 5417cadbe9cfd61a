# Copyright (c) mmvfm contributors. All rights reserved.
"""`tools/dist_train.sh CONFIG 2` on the CPU: gloo, 2 ranks, real DDP."""


def test_dist_train_two_processes(tiny_cfg, dist_train_probed):
    records = dist_train_probed(tiny_cfg(max_iters=2, batch_size=2))
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
