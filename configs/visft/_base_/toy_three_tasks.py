# ViSFT's three tasks on the toy foundation model, the part both stages
# share: MultiTaskModel on the toy ViT (192-d, 6 blocks, patch 8 at 128 px)
# initialised from the toy CLIP model's image encoder, with three heads that
# read its last map -- 'det' (Deformable DETR), 'seg' (Mask2Former, instance
# masks), 'caption' (CaptionTaskHead) -- and each task's data, preprocessing
# and evaluator. The stage-1 configs keep one task of this file, the
# stage-2 config all three (same task names, so a stage-1 checkpoint's
# `heads.<task>.` keys are stage 2's).
#
# Backbone weights: the toy CLIP model of configs/clip, trained first with
#   python tools/train.py configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py
# (its ViT keys are `image_encoder.*`; trained at 64 px, the position
# embedding is interpolated to 128 px). Another checkpoint:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH (stage 1) or
# model.backbone.module.module.init_cfg.checkpoint=PATH (stage 2: the ViT
# inside the LoRA and gradient-checkpointing builders).
# Captioning also needs the tokenizer file (configs/captioning/README.md).
_base_ = [
    '../../captioning/vit-t8_caption_1xb8-500i_toy-coco.py',
    './toy_det_seg_heads.py',
]
clip_ckpt = 'work_dirs/clip_vit-t8_text-w128_1xb32-500i_toy-coco/iter_500.pth'

# as configs/vit_trunk/_base_/toy_single_task.py: 128 px inputs stay 128 px
det_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=True,
)
model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,
            type='Pretrained',
            checkpoint=clip_ckpt,
            prefix='image_encoder.',
        )
    ),
    # no shared neck: det and seg carry their own pyramids
    # (toy_det_seg_heads.py), the caption head reads the ViT's map
    neck=None,
    data_preprocessor=dict(
        preprocessors=dict(det=det_preprocessor, seg=det_preprocessor)
    ),
    tasks=dict(
        det={{_base_.deformable_detr_task}},
        seg={{_base_.mask2former_task}},
    ),
)

# the toy COCO set of configs/_base_/datasets/toy_coco_detection.py (boxes)
# and toy_coco_instance.py (boxes and masks)
det_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
det_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=(
            'img_id',
            'img_path',
            'ori_shape',
            'img_shape',
            'scale_factor',
        ),
    ),
]
instances_train = dict(
    type='ToyCocoDataset',
    data_root='data/toy_coco/',
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img=''),
    filter_cfg=dict(filter_empty_gt=True, min_size=4),
    pipeline=det_train_pipeline,
)
instances_val = dict(
    type='ToyCocoDataset',
    data_root='data/toy_coco/',
    ann_file='annotations/instances_val.json',
    data_prefix=dict(img=''),
    test_mode=True,
    pipeline=det_test_pipeline,
)
train_dataloader = dict(
    det=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=instances_train,
    ),
    seg=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=dict(
            instances_train,
            pipeline={{_base_.mask2former_pipelines.train}},
        ),
    ),
)
val_dataloader = dict(
    det=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=instances_val,
    ),
    seg=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            instances_val, pipeline={{_base_.mask2former_pipelines.test}}
        ),
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    det=dict(
        type='CocoMetric',
        ann_file='data/toy_coco/annotations/instances_val.json',
        metric='bbox',
    ),
    seg=dict(
        type='CocoMetric',
        ann_file='data/toy_coco/annotations/instances_val.json',
        metric=['bbox', 'segm'],
    ),
)
test_evaluator = val_evaluator

# ViSFT's optimizer in both stages (the configs set lr and the schedule):
# AdamW, weight decay 1e-4, global gradient-norm clipping at 0.1; only
# parameters that require grad enter the optimizer (frozen ones are out).
# The trunk configs' lr_mult 0.1 on deformable attention's sampling
# offsets is kept (it applies to stage 1's det and seg heads).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
)
# (no drawing hook here: each config draws the tasks it has, e.g.
# `tools/test.py --show-dir DIR` draws det and seg into DIR/<task>/)
default_hooks = dict(
    # the last checkpoint only, iter_<max_iters>.pth: what stage 2 loads
    checkpoint=dict(
        _delete_=True,
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=-1,
        save_last=True,
    ),
)
