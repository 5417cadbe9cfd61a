# Data, optimizer and runtime shared by the DETR-family toy configs of
# configs/gqpos/ (the schedule lives in each config, which knows its
# max_iters): 128 px toy COCO images, batch 8, AdamW with gradient clipping,
# no pretrained weights anywhere.
_base_ = [
    '../../_base_/datasets/toy_coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]

val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=-1,
        save_last=True,
    ),
)
log_processor = dict(by_epoch=False)
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

# 1 process x 8 images; --auto-scale-lr rescales lr for other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=8)
