# Uni-Perceiver v2 on the toy COCO set, all five tasks in one model:
# part 1's classification, captioning and retrieval (64 px, batch 32) plus
# detection (bbox mAP) and instance segmentation (bbox and segm mAP) over
# the 5 class names (128 px, batch 8), one task per iteration ('unmixed'),
# MT-AdamW, every task evaluated by its own metric in one val loop.
#
# Region proposals (configs/uniperceiver_v2/README.md): the paper's stage is
# MaskDINO-like; the toy uses a lighter one, mmdet's Mask2Former head with
# ONE foreground class (RegionProposer) on ViTDet's simple pyramid of the
# ViT's last map (strides 8/16/32, 128 channels): 20 queries, a 2-layer
# deformable pixel decoder, a 3-layer transformer decoder. Its 20 proposals
# become tokens q_sem + B(box) + M(mask) for the task-agnostic decoder,
# whose outputs are matched against the class names.
#
# Budget: 1500 iterations, ~300 per task; measured per iteration with one
# thread (2-core CPU, another run beside it): see the README's toy table.
_base_ = [
    './uniperceiver-v2_vit-t8_cls-cap-ret_1xb32-1200i_toy-coco.py',
    '../vit_trunk/_base_/mask2former_head.py',
]

data_root = 'data/toy_coco/'
classes = ['circle', 'square', 'triangle', 'ring', 'cross']
max_iters = 1500
task_ratios = dict(
    classification=1.0,
    captioning=1.0,
    retrieval=1.0,
    detection=1.0,
    instance_segmentation=1.0,
)

det_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=True,
)
# The proposal stage is configs/vit_trunk's Mask2Former head with one
# foreground class ("no object" weighted 0.1 as mmdet's COCO config), 20
# queries and a 2-layer pixel decoder; its matching costs, losses and 1024
# sampled points are the base's.
proposer_head = _base_.mask2former_task.detector.panoptic_head
proposer_head.update(num_things_classes=1, num_queries=20)
proposer_head.pixel_decoder.encoder.num_layers = 2
proposer_head.loss_cls.class_weight = [1.0, 0.1]

model = dict(
    data_preprocessor=dict(
        preprocessors=dict(
            detection=det_preprocessor,
            instance_segmentation=det_preprocessor,
        )
    ),
    tasks=dict(
        detection=dict(type='detection', classes=classes, max_per_image=50),
        instance_segmentation=dict(
            type='instance_segmentation', classes=classes, max_per_image=50
        ),
    ),
    proposer=dict(
        type='RegionProposer',
        neck=dict(
            type='SimpleFeaturePyramid',
            in_channels=192,
            out_channels=128,
            scale_factors=(1.0, 0.5),
            num_extra_levels=1,
        ),
        head=proposer_head,
        train_cfg=_base_.mask2former_task.detector.train_cfg,
    ),
    proposal_tokens=dict(num_feats=32, pool_size=28),
)

instance_train_pipeline = _base_.mask2former_pipelines.train
instance_test_pipeline = _base_.mask2former_pipelines.test
instances = dict(
    type='ToyCocoDataset',
    data_root=data_root,
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img=''),
    filter_cfg=dict(filter_empty_gt=True, min_size=4),
    pipeline=instance_train_pipeline,
)
val_instances = dict(
    type='ToyCocoDataset',
    data_root=data_root,
    ann_file='annotations/instances_val.json',
    data_prefix=dict(img=''),
    test_mode=True,
    pipeline=instance_test_pipeline,
)
det_train_loader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    dataset=instances,
)
det_val_loader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=val_instances,
)
train_dataloader = dict(
    detection=det_train_loader, instance_segmentation=det_train_loader
)
val_dataloader = dict(
    detection=det_val_loader, instance_segmentation=det_val_loader
)
test_dataloader = val_dataloader
val_evaluator = dict(
    detection=dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val.json',
        metric='bbox',
    ),
    instance_segmentation=dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val.json',
        metric=['bbox', 'segm'],
    ),
)
test_evaluator = val_evaluator

train_cfg = dict(
    max_iters=max_iters, val_interval=max_iters, task_ratios=task_ratios
)
optim_wrapper = dict(optimizer=dict(task_ratios=task_ratios))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        T_max=max_iters - 50,
        eta_min=2e-6,
    ),
]
