# Two tasks, one model, on the toy COCO set: detection (FPN + RetinaNet
# head) and single-label classification of the dominant shape (global
# average pooling + linear head) on a shared ResNet-18 at half width.
# Each task keeps its own dataset, pipeline, batch size and preprocessing;
# every iteration trains one task, drawn 50/50 ('unmixed': all ranks the
# same task). Validation reports det/coco/bbox_mAP and
# cls/accuracy/top1 in one loop.
_base_ = [
    '../_base_/datasets/toy_coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

data_root = 'data/toy_coco/'
mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
num_classes = 5

model = dict(
    type='MultiTaskModel',
    data_preprocessor=dict(
        type='MultiTaskDataPreprocessor',
        preprocessors=dict(
            det=dict(
                type='DetDataPreprocessor',
                mean=mean,
                std=std,
                bgr_to_rgb=True,
                pad_size_divisor=32,
            ),
            cls=dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=mean,
                std=std,
                to_rgb=True,
                num_classes=num_classes,
            ),
        ),
    ),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None,
    ),
    tasks=dict(
        det=dict(
            type='DetTaskHead',
            neck=dict(
                type='FPN',
                in_channels=[32, 64, 128, 256],
                out_channels=64,
                start_level=1,
                add_extra_convs='on_input',
                num_outs=5,
            ),
            head=dict(
                type='RetinaHead',
                num_classes=num_classes,
                in_channels=64,
                stacked_convs=2,
                feat_channels=64,
                norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
                anchor_generator=dict(
                    type='AnchorGenerator',
                    octave_base_scale=2,
                    scales_per_octave=3,
                    ratios=[0.5, 1.0, 2.0],
                    strides=[8, 16, 32, 64, 128],
                ),
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0.0, 0.0, 0.0, 0.0],
                    target_stds=[1.0, 1.0, 1.0, 1.0],
                ),
                reg_decoded_bbox=True,
                loss_cls=dict(
                    type='FocalLoss',
                    use_sigmoid=True,
                    gamma=2.0,
                    alpha=0.25,
                    loss_weight=1.0,
                ),
                loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
                train_cfg=dict(
                    assigner=dict(
                        type='MaxIoUAssigner',
                        pos_iou_thr=0.5,
                        neg_iou_thr=0.4,
                        min_pos_iou=0,
                        ignore_iof_thr=-1,
                    ),
                    sampler=dict(type='PseudoSampler'),
                    allowed_border=-1,
                    pos_weight=-1,
                    debug=False,
                ),
                test_cfg=dict(
                    nms_pre=1000,
                    min_bbox_size=0,
                    score_thr=0.05,
                    nms=dict(type='nms', iou_threshold=0.5),
                    max_per_img=100,
                ),
            ),
        ),
        cls=dict(
            type='ClsTaskHead',
            neck=dict(type='mmpretrain.GlobalAveragePooling'),
            head=dict(
                type='mmpretrain.LinearClsHead',
                num_classes=num_classes,
                in_channels=256,
                loss=dict(type='mmpretrain.CrossEntropyLoss'),
                topk=(1,),
            ),
        ),
    ),
)

cls_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='mmpretrain.PackInputs'),
]
cls_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(type='mmpretrain.PackInputs'),
]


cls_dataset = dict(
    type='mmpretrain.ToyClassificationDataset',
    data_root=data_root,
    ann_file='annotations/classification_train.json',
    data_prefix='',
    pipeline=cls_train_pipeline,
)

train_dataloader = dict(
    _delete_=True,
    det=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=dict(
            type='ToyCocoDataset',
            data_root=data_root,
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=4),
            pipeline={{_base_.train_pipeline}},
        ),
    ),
    cls=dict(
        batch_size=16,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=cls_dataset,
    ),
)
val_dataloader = dict(
    _delete_=True,
    det=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='ToyCocoDataset',
            data_root=data_root,
            ann_file='annotations/instances_val.json',
            data_prefix=dict(img=''),
            test_mode=True,
            pipeline={{_base_.test_pipeline}},
        ),
    ),
    cls=dict(
        batch_size=16,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            cls_dataset,
            ann_file='annotations/classification_val.json',
            test_mode=True,
            pipeline=cls_test_pipeline,
        ),
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    det={{_base_.val_evaluator}},
    cls=dict(type='mmpretrain.Accuracy', topk=(1,)),
)
test_evaluator = val_evaluator

max_iters = 1000
train_cfg = dict(
    type='MultiTaskIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=dict(det=0.5, cls=0.5),
    strategy='unmixed',
)
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2),
)
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
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=2,
        save_best='det/coco/bbox_mAP',
        rule='greater',
    ),
    # `tools/test.py --show-dir DIR` draws the detection task's predictions
    # into DIR/det/ (the classification task is not drawn)
    visualization=dict(
        type='MultiTaskVisualizationHook',
        task_hooks=dict(det=dict(type='DetVisualizationHook')),
    ),
)
log_processor = dict(by_epoch=False)
# every iteration leaves the other task's head unused
find_unused_parameters = True
auto_scale_lr = dict(enable=False, base_batch_size=8)
