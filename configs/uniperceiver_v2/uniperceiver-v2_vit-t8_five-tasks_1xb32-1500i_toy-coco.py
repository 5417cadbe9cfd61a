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
_base_ = './uniperceiver-v2_vit-t8_cls-cap-ret_1xb32-1200i_toy-coco.py'

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
det_size = 128
m2f_dims = 128

det_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=True,
)
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
        head=dict(
            type='Mask2FormerHead',
            in_channels=[128, 128, 128],
            strides=[8, 16, 32],
            feat_channels=m2f_dims,
            out_channels=m2f_dims,
            num_queries=20,
            num_transformer_feat_level=2,
            pixel_decoder=dict(
                type='MSDeformAttnPixelDecoder',
                num_outs=2,
                norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                encoder=dict(
                    num_layers=2,
                    layer_cfg=dict(
                        self_attn_cfg=dict(
                            embed_dims=m2f_dims,
                            num_heads=4,
                            num_levels=2,
                            num_points=4,
                            dropout=0.0,
                            batch_first=True,
                        ),
                        ffn_cfg=dict(
                            embed_dims=m2f_dims,
                            feedforward_channels=4 * m2f_dims,
                            num_fcs=2,
                            ffn_drop=0.0,
                            act_cfg=dict(type='ReLU', inplace=True),
                        ),
                    ),
                ),
                positional_encoding=dict(
                    num_feats=m2f_dims // 2, normalize=True
                ),
            ),
            enforce_decoder_input_project=False,
            positional_encoding=dict(num_feats=m2f_dims // 2, normalize=True),
            transformer_decoder=dict(
                return_intermediate=True,
                num_layers=3,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=m2f_dims,
                        num_heads=4,
                        dropout=0.0,
                        batch_first=True,
                    ),
                    cross_attn_cfg=dict(
                        embed_dims=m2f_dims,
                        num_heads=4,
                        dropout=0.0,
                        batch_first=True,
                    ),
                    ffn_cfg=dict(
                        embed_dims=m2f_dims,
                        feedforward_channels=4 * m2f_dims,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            # mmdet's COCO weights, the "no object" class at 0.1
            loss_cls=dict(
                type='CrossEntropyLoss',
                use_sigmoid=False,
                loss_weight=2.0,
                reduction='mean',
                class_weight=[1.0, 0.1],
            ),
            loss_mask=dict(
                type='CrossEntropyLoss',
                use_sigmoid=True,
                reduction='mean',
                loss_weight=5.0,
            ),
            loss_dice=dict(
                type='DiceLoss',
                use_sigmoid=True,
                activate=True,
                reduction='mean',
                naive_dice=True,
                eps=1.0,
                loss_weight=5.0,
            ),
        ),
        train_cfg=dict(
            num_points=1024,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='ClassificationCost', weight=2.0),
                    dict(
                        type='CrossEntropyLossCost',
                        weight=5.0,
                        use_sigmoid=True,
                    ),
                    dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
                ],
            ),
            sampler=dict(type='MaskPseudoSampler'),
        ),
    ),
    proposal_tokens=dict(num_feats=32, pool_size=28),
)

instance_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(det_size, det_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
instance_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(det_size, det_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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
