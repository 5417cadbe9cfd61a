# A deeper, longer-trained toy RetinaNet: the FGD teacher of the toy
# student (same FPN/head widths, so init_student can copy neck and head).
_base_ = './retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py'

model = dict(backbone=dict(depth=34))

max_iters = 1500
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        T_max=max_iters - 50,
        eta_min=2e-5,
    ),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
