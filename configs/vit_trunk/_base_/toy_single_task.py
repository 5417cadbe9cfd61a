# One task ('det') of MultiTaskModel on the toy COCO set, CPU-sized: the
# data, loops, optimizer and schedule shared by the configs of this folder
# (ViT vs ResNet-18 trunk, Deformable DETR vs Mask2Former head), so that
# the trunks are compared on equal schedules. Each config sets the model's
# backbone, neck and task head, and the det pipelines / evaluator where
# they differ (masks for Mask2Former).
_base_ = [
    '../../_base_/datasets/toy_coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

model = dict(
    type='MultiTaskModel',
    data_preprocessor=dict(
        type='MultiTaskDataPreprocessor',
        preprocessors=dict(
            det=dict(
                type='DetDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                # a multiple of the ViT's patch (8) x the pyramid's largest
                # stride ratio (4): 128 px inputs stay 128 px
                pad_size_divisor=32,
                pad_mask=True,
            )
        ),
    ),
)

train_dataloader = dict(
    _delete_=True,
    det=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset={{_base_.train_dataloader.dataset}},
    ),
)
val_dataloader = dict(_delete_=True, det={{_base_.val_dataloader}})
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, det={{_base_.val_evaluator}})
test_evaluator = val_evaluator

max_iters = 500
warmup_iters = 50
train_cfg = dict(
    type='MultiTaskIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=dict(det=1.0),
)
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'sampling_offsets': dict(lr_mult=0.1),
            'reference_points': dict(lr_mult=0.1),
        }
    ),
)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters,
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters,
        T_max=max_iters - warmup_iters,
        eta_min=4e-6,
    ),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=-1,
        save_last=True,
    ),
    visualization=dict(
        type='MultiTaskVisualizationHook',
        task_hooks=dict(det=dict(type='DetVisualizationHook')),
    ),
)
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=8)
