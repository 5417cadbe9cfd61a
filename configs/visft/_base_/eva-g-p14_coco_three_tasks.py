# ViSFT's three tasks on EVA-CLIP ViT-G/14 and COCO 2017, the part both
# stages share: MultiTaskModel on mmpretrain's ViT (arch 'eva-g': 1408-d,
# 40 blocks, 16 heads, FFN 6144, patch 14; 224 px position grid,
# interpolated to each input) with three heads reading its last map --
# 'det' (DETR, 100 queries), 'seg' (Mask2Former, instance masks, after its
# own ViTDet pyramid), 'caption' (CaptionTaskHead) -- and each task's data,
# preprocessing and evaluator. The stage-1 configs keep one task of this
# file, the stage-2 config all three (same task names: a stage-1
# checkpoint's `heads.<task>.` keys are stage 2's).
#
# Backbone weights: EVA-CLIP's vision tower converted to mmpretrain's keys,
#   python tools/model_converters/eva_clip_to_mmpretrain.py \
#       EVA01_CLIP_g_14_psz14_s11B.pt checkpoints/eva01-clip-g-14_mmpretrain.pth
# (ViSFT's own `eva_vit_g.pth`, keys without `visual.`, converts the same).
# Another path: --cfg-options model.backbone.init_cfg.checkpoint=PATH
# (stage 1) or model.backbone.module.module.init_cfg.checkpoint=PATH
# (stage 2: the ViT inside the LoRA and gradient-checkpointing builders).
# The caption head's tokenizer (offline, once):
#   python tools/misc/train_tokenizer.py \
#       data/coco/annotations/captions_train2017.json data/coco/tokenizer.json \
#       --vocab-size 10000
#
# Input sizes and augmentation follow ViSFT's code (TencentARC/ViSFT,
# mmf/configs/datasets/coco/*.yaml), not EVA-CLIP's 224 px, for the dense
# tasks: detection as DETR's multi-scale resize / crop with the long side
# at most 672 (test: long side 672), instance segmentation
# as Mask2Former's large-scale jitter at 1024 (test: 730 / 1216);
# captioning at 224 x 224. Departures from ViSFT's code, each forced or
# chosen: the class token stays (EVA-CLIP's checkpoint has one and keys
# must match; ViSFT's ViT leaves it out), inputs are normalised with
# EVA-CLIP's mean and std (ViSFT's processors use ImageNet's), the caption
# head is our transformer (ViSFT: an attention LSTM) with a BPE vocabulary,
# and the dataset dicts are written out (values of mmdet's
# _base_/datasets/coco_detection.py / coco_instance.py): mmdet's dataset
# bases cannot be combined in one multi-task config (same top-level keys).
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

eva_ckpt = 'checkpoints/eva01-clip-g-14_mmpretrain.pth'
data_root = 'data/coco/'
vocab_size = 10000  # train_tokenizer.py prints the file's size: keep equal
num_classes = 80
# EVA-CLIP's (OpenAI CLIP's) normalisation, 0-255 scale
mean = [122.770938, 116.7460125, 104.09373615]
std = [68.5005327, 66.6321579, 70.32316305]

eva_g = dict(
    type='mmpretrain.VisionTransformer',
    arch='eva-g',
    img_size=224,
    patch_size=14,
    out_type='featmap',  # the patch tokens as a (B, 1408, H/14, W/14) map
    with_cls_token=True,
    final_norm=True,
    drop_path_rate=0.0,
    init_cfg=dict(type='Pretrained', checkpoint=eva_ckpt),
)

# ---------------------------------------------------------------- heads
# mmdet's DETR (detr/detr_r50_8xb2-150e_coco.py) on the single map at
# stride 14: ChannelMapper 1408 -> 256, 6 + 6 layers, 100 queries.
detr_dims = 256
detr_task = dict(
    type='DetectorTaskHead',
    detector=dict(
        type='DETR',
        num_queries=100,
        neck=dict(
            type='ChannelMapper',
            in_channels=[1408],
            kernel_size=1,
            out_channels=detr_dims,
            act_cfg=None,
            norm_cfg=None,
            num_outs=1,
        ),
        encoder=dict(
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=detr_dims,
                    num_heads=8,
                    dropout=0.1,
                    batch_first=True,
                ),
                ffn_cfg=dict(
                    embed_dims=detr_dims,
                    feedforward_channels=2048,
                    num_fcs=2,
                    ffn_drop=0.1,
                    act_cfg=dict(type='ReLU', inplace=True),
                ),
            ),
        ),
        decoder=dict(
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=detr_dims,
                    num_heads=8,
                    dropout=0.1,
                    batch_first=True,
                ),
                cross_attn_cfg=dict(
                    embed_dims=detr_dims,
                    num_heads=8,
                    dropout=0.1,
                    batch_first=True,
                ),
                ffn_cfg=dict(
                    embed_dims=detr_dims,
                    feedforward_channels=2048,
                    num_fcs=2,
                    ffn_drop=0.1,
                    act_cfg=dict(type='ReLU', inplace=True),
                ),
            ),
            return_intermediate=True,
        ),
        positional_encoding=dict(num_feats=detr_dims // 2, normalize=True),
        bbox_head=dict(
            type='DETRHead',
            num_classes=num_classes,
            embed_dims=detr_dims,
            loss_cls=dict(
                type='CrossEntropyLoss',
                bg_cls_weight=0.1,
                use_sigmoid=False,
                loss_weight=1.0,
                class_weight=1.0,
            ),
            loss_bbox=dict(type='L1Loss', loss_weight=5.0),
            loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        ),
        train_cfg=dict(
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='ClassificationCost', weight=1.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0),
                ],
            )
        ),
        test_cfg=dict(max_per_img=100),
    ),
)

# mmdet's Mask2Former for instance segmentation
# (mask2former/mask2former_r50_8xb2-lsj-50e_coco.py: 256-d, 6-layer
# deformable pixel decoder, 9-layer transformer decoder, 100 queries) after
# its own ViTDet pyramid of the stride-14 map (scales 4, 2, 1, 0.5: strides
# 3.5, 7, 14, 28; the head's `strides` only order the levels, the pixel
# decoder normalises them away).
m2f_dims = 256
mask2former_task = dict(
    type='DetectorTaskHead',
    detector=dict(
        type='Mask2Former',
        neck=dict(
            type='SimpleFeaturePyramid',
            in_channels=1408,
            out_channels=m2f_dims,
            scale_factors=(4.0, 2.0, 1.0, 0.5),
        ),
        panoptic_head=dict(
            type='Mask2FormerHead',
            in_channels=[m2f_dims] * 4,
            strides=[4, 8, 16, 32],
            feat_channels=m2f_dims,
            out_channels=m2f_dims,
            num_things_classes=num_classes,
            num_stuff_classes=0,
            num_queries=100,
            num_transformer_feat_level=3,
            pixel_decoder=dict(
                type='MSDeformAttnPixelDecoder',
                num_outs=3,
                norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                encoder=dict(
                    num_layers=6,
                    layer_cfg=dict(
                        self_attn_cfg=dict(
                            embed_dims=m2f_dims,
                            num_heads=8,
                            num_levels=3,
                            num_points=4,
                            dropout=0.0,
                            batch_first=True,
                        ),
                        ffn_cfg=dict(
                            embed_dims=m2f_dims,
                            feedforward_channels=1024,
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
                num_layers=9,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=m2f_dims,
                        num_heads=8,
                        dropout=0.0,
                        batch_first=True,
                    ),
                    cross_attn_cfg=dict(
                        embed_dims=m2f_dims,
                        num_heads=8,
                        dropout=0.0,
                        batch_first=True,
                    ),
                    ffn_cfg=dict(
                        embed_dims=m2f_dims,
                        feedforward_channels=2048,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type='ReLU', inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            loss_cls=dict(
                type='CrossEntropyLoss',
                use_sigmoid=False,
                loss_weight=2.0,
                reduction='mean',
                class_weight=[1.0] * num_classes + [0.1],
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
        panoptic_fusion_head=dict(
            type='MaskFormerFusionHead',
            num_things_classes=num_classes,
            num_stuff_classes=0,
            loss_panoptic=None,
            init_cfg=None,
        ),
        train_cfg=dict(
            num_points=12544,
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
        test_cfg=dict(
            panoptic_on=False,
            semantic_on=False,
            instance_on=True,
            max_per_image=100,
            iou_thr=0.8,
            filter_low_score=True,
        ),
        init_cfg=None,
    ),
)

# our transformer caption decoder over the 16 x 16 tokens of a 224 px image
# (6 layers, 512-d: the width of ViSFT's LSTM decoder)
caption_task = dict(
    type='CaptionTaskHead',
    head=dict(
        type='CaptionHead',
        vocab_size=vocab_size,
        in_channels=1408,
        width=512,
        depth=6,
        num_heads=8,
        max_length=64,  # <bos> and <eos> included
        dropout=0.1,
        label_smoothing=0.1,
        tokenizer=dict(
            type='BPETokenizer',
            file=data_root + 'tokenizer.json',
            vocab_size=vocab_size,
        ),
        decode_cfg=dict(mode='beam', beam_size=3, length_penalty=0.6),
    ),
)

model = dict(
    type='MultiTaskModel',
    data_preprocessor=dict(
        type='MultiTaskDataPreprocessor',
        preprocessors=dict(
            # pad to the patch (14); seg to 28 so the pyramid's stride-2
            # pooling halves the map evenly
            det=dict(
                type='DetDataPreprocessor',
                mean=mean,
                std=std,
                bgr_to_rgb=True,
                pad_size_divisor=14,
            ),
            seg=dict(
                type='DetDataPreprocessor',
                mean=mean,
                std=std,
                bgr_to_rgb=True,
                pad_size_divisor=28,
                pad_mask=True,
                mask_pad_value=0,
            ),
            caption=dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=mean,
                std=std,
                to_rgb=True,
                pad_size_divisor=14,
            ),
        ),
    ),
    backbone=eva_g,
    neck=None,  # det and seg bring their own, caption reads the map
    tasks=dict(det=detr_task, seg=mask2former_task, caption=caption_task),
)

# ----------------------------------------------------------------- data
# detection: DETR's augmentation with ViSFT's sizes (short side 480-672,
# long side <= 672; or short 400-600, a 384-600 crop, then the same);
# mmdet's (a, b) with keep_ratio: long side <= max(a, b), short <= min(a, b)
det_scales = [(s, 672) for s in (480, 512, 544, 576, 608, 640, 672)]
det_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=det_scales,
                    keep_ratio=True,
                )
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True,
                ),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True,
                ),
                dict(
                    type='RandomChoiceResize',
                    scales=det_scales,
                    keep_ratio=True,
                ),
            ],
        ],
    ),
    dict(type='PackDetInputs'),
]
det_test_pipeline = [
    dict(type='LoadImageFromFile'),
    # ViSFT: short side 800 but long side <= 672, i.e. long side 672
    dict(type='Resize', scale=(672, 672), keep_ratio=True),
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
# instance segmentation: Mask2Former's large-scale jitter (0.1-2.0 of 1024)
seg_train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomResize',
        scale=(1024, 1024),
        ratio_range=(0.1, 2.0),
        resize_type='Resize',
        keep_ratio=True,
    ),
    dict(
        type='RandomCrop',
        crop_size=(1024, 1024),
        crop_type='absolute',
        recompute_bbox=True,
        allow_negative_crop=True,
    ),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type='PackDetInputs'),
]
seg_test_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='Resize', scale=(1216, 730), keep_ratio=True),
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
# captioning: the whole image at 224 x 224 (no flip: captions say left/right)
caption_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(224, 224), keep_ratio=False),
    dict(
        type='mmpretrain.PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['img_id', 'img_path'],
    ),
]

coco_train = dict(
    type='CocoDataset',
    data_root=data_root,
    ann_file='annotations/instances_train2017.json',
    data_prefix=dict(img='train2017/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=32),
)
coco_val = dict(
    type='CocoDataset',
    data_root=data_root,
    ann_file='annotations/instances_val2017.json',
    data_prefix=dict(img='val2017/'),
    test_mode=True,
)
captions_train = dict(
    type='CocoImageCaptionsDataset',
    data_root=data_root,
    ann_file='annotations/captions_train2017.json',
    data_prefix=dict(img='train2017/'),
    pipeline=caption_pipeline,
)
train_sampler = dict(type='ResumableInfiniteSampler', shuffle=True)
val_sampler = dict(type='DefaultSampler', shuffle=False)
train_dataloader = dict(
    det=dict(
        batch_size=1,
        num_workers=2,
        persistent_workers=True,
        sampler=train_sampler,
        dataset=dict(coco_train, pipeline=det_train_pipeline),
    ),
    seg=dict(
        batch_size=1,
        num_workers=2,
        persistent_workers=True,
        sampler=train_sampler,
        dataset=dict(coco_train, pipeline=seg_train_pipeline),
    ),
    caption=dict(
        batch_size=32,
        num_workers=4,
        persistent_workers=True,
        sampler=train_sampler,
        dataset=captions_train,
    ),
)
val_dataloader = dict(
    det=dict(
        batch_size=1,
        num_workers=2,
        persistent_workers=True,
        drop_last=False,
        sampler=val_sampler,
        dataset=dict(coco_val, pipeline=det_test_pipeline),
    ),
    seg=dict(
        batch_size=1,
        num_workers=2,
        persistent_workers=True,
        drop_last=False,
        sampler=val_sampler,
        dataset=dict(coco_val, pipeline=seg_test_pipeline),
    ),
    caption=dict(
        batch_size=32,
        num_workers=4,
        persistent_workers=True,
        drop_last=False,
        sampler=val_sampler,
        dataset=dict(
            captions_train,
            ann_file='annotations/captions_val2017.json',
            data_prefix=dict(img='val2017/'),
            test_mode=True,
        ),
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    det=dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val2017.json',
        metric='bbox',
    ),
    seg=dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val2017.json',
        metric=['bbox', 'segm'],
    ),
    # references: each image's captions (gt_caption)
    caption=dict(type='CaptionMetric'),
)
test_evaluator = val_evaluator

# ------------------------------------------------------- loops, optimizer
# the configs set max_iters, task_ratios, lr and the schedule
train_cfg = dict(type='MultiTaskIterBasedTrainLoop', strategy='unmixed')
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')
# ViSFT's optimizer in both stages: AdamW (eps 1e-8), weight decay 1e-4,
# global gradient-norm clipping at 0.1; only parameters that require grad
# enter the optimizer
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableOptimWrapperConstructor',
    optimizer=dict(type='AdamW', eps=1e-8, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
)
# mmdet's hooks without its DetVisualizationHook (each config draws the
# tasks it has with MultiTaskVisualizationHook)
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=5000,
        max_keep_ckpts=2,
        save_last=True,
    ),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=8)
