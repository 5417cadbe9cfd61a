# Uni-Perceiver v2 with a ResNet-50 backbone on COCO (detection + instance
# segmentation, captioning, image-text retrieval) and ImageNet-1k
# (classification): the paper's architecture; every value the paper does
# not give (our notes: ../../../shared/PAPERS.md) is marked OURS.
#
# Paper: backbone -> multi-scale maps -> MaskDINO-like proposals with
# binary fg/bg scores -> proposal tokens q_sem + B(box) + M(mask 28x28),
# plus global tokens; a BERT-base-style task-agnostic decoder (6 layers,
# 768-d) over the image tokens and a RoBERTa-base text encoder; every task
# as likelihood over its candidates; MT-AdamW (TBGN, betas 0.1 / 0.001 in
# its convention), unmixed sampling, retrieval gathered across GPUs.
# The ablation of the paper (R50) is this config against mixed sampling +
# AdamW (see README.md).
#
# Data layout: data/coco (train2017/, val2017/, annotations/instances_*,
# captions_*), data/imagenet (train/, val/, meta/{train,val}.txt), and a
# tokenizer trained on the COCO captions:
#   python tools/misc/train_tokenizer.py \
#       data/coco/annotations/captions_train2017.json \
#       data/coco/tokenizer.json --vocab-size 30000
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

coco_root = 'data/coco/'
imagenet_root = 'data/imagenet/'
vocab_size = 30000  # OURS: a BPE trained on COCO captions (RoBERTa: 50265)
dims = 768  # the decoder's width (BERT-base)
max_iters = 90000  # OURS
# OURS: the paper gives its sampling ratios only per its own task mix
task_ratios = dict(
    instance_segmentation=1.0,
    classification=1.0,
    captioning=1.0,
    retrieval=1.0,
)
mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

det_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=mean,
    std=std,
    bgr_to_rgb=True,
    pad_size_divisor=32,
    pad_mask=True,
)
image_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor', mean=mean, std=std, to_rgb=True
)
model = dict(
    type='UniPerceiverV2',
    data_preprocessor=dict(
        type='MultiTaskDataPreprocessor',
        preprocessors=dict(
            instance_segmentation=det_preprocessor,
            classification=image_preprocessor,
            captioning=image_preprocessor,
            retrieval=image_preprocessor,
        ),
    ),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),  # C3-C5 for the proposal stage
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
    ),
    image_channels=2048,  # global and map tokens from C5
    num_global=4,  # OURS
    global_heads=8,  # OURS
    # RoBERTa-base's size (12 x 768, 12 heads), our text transformer, causal
    # (captioning needs it), randomly initialised: OURS
    text_encoder=dict(
        type='TextTransformer',
        vocab_size=vocab_size,
        width=768,
        depth=12,
        num_heads=12,
        max_length=40,
        causal=True,
        pool='eos',
    ),
    tokenizer=dict(
        type='BPETokenizer',
        file=coco_root + 'tokenizer.json',
        vocab_size=vocab_size,
        max_length=40,
    ),
    decoder=dict(type='TaskAgnosticDecoder', dims=dims, depth=6, num_heads=12),
    loss=dict(init_temperature=0.07, max_scale=100.0),
    tasks=dict(
        instance_segmentation=dict(
            type='instance_segmentation',
            classes='CocoDataset',
            max_per_image=100,
        ),
        # the first synonym of each ImageNet name (OURS: 'great white
        # shark' for 'great white shark, white shark, man-eater, ...')
        classification=dict(
            type='classification',
            classes='mmpretrain.ImageNet',
            synonyms='first',
            # every name in the softmax, 256 with gradient per step (the
            # batch's labels + random others): OURS, for memory
            grad_candidates=256,
        ),
        captioning=dict(
            type='captioning',
            # the whole vocabulary in the softmax, 1024 words with gradient
            # per step (the batch's words + random others): OURS, for memory
            grad_candidates=1024,
            decode_cfg=dict(
                mode='beam', beam_size=3, max_length=20, length_penalty=0.6
            ),
        ),
        retrieval=dict(type='retrieval', gather=True),
    ),
    # MaskDINO-like proposals: mmdet's DINO-4scale R50 (its neck, 6 + 6
    # layers, 256-d, contrastive denoising) with ONE foreground class and
    # our mask branch (MaskDINOProposer). 300 queries: OURS (MaskDINO's).
    # Written out because mmdet's dino-4scale_r50_8xb2-12e_coco.py as a
    # second _base_ clashes on `model` and the dataloaders; a test keeps it
    # equal to that file but for num_classes and num_queries.
    proposer=dict(
        type='MaskDINOProposer',
        detector=dict(
            type='DINO',
            num_queries=300,
            with_box_refine=True,
            as_two_stage=True,
            neck=dict(
                type='ChannelMapper',
                in_channels=[512, 1024, 2048],
                kernel_size=1,
                out_channels=256,
                act_cfg=None,
                norm_cfg=dict(type='GN', num_groups=32),
                num_outs=4,
            ),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256, num_levels=4, dropout=0.0
                    ),
                    ffn_cfg=dict(
                        embed_dims=256, feedforward_channels=2048, ffn_drop=0.0
                    ),
                ),
            ),
            decoder=dict(
                num_layers=6,
                return_intermediate=True,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256, num_heads=8, dropout=0.0
                    ),
                    cross_attn_cfg=dict(
                        embed_dims=256, num_levels=4, dropout=0.0
                    ),
                    ffn_cfg=dict(
                        embed_dims=256, feedforward_channels=2048, ffn_drop=0.0
                    ),
                ),
                post_norm_cfg=None,
            ),
            positional_encoding=dict(
                num_feats=128, normalize=True, offset=0.0, temperature=20
            ),
            bbox_head=dict(
                type='DINOHead',
                num_classes=1,
                sync_cls_avg_factor=True,
                loss_cls=dict(
                    type='FocalLoss',
                    use_sigmoid=True,
                    gamma=2.0,
                    alpha=0.25,
                    loss_weight=1.0,
                ),
                loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                loss_iou=dict(type='GIoULoss', loss_weight=2.0),
            ),
            dn_cfg=dict(
                label_noise_scale=0.5,
                box_noise_scale=1.0,
                group_cfg=dict(
                    dynamic=True, num_groups=None, num_dn_queries=100
                ),
            ),
            train_cfg=dict(
                assigner=dict(
                    type='HungarianAssigner',
                    match_costs=[
                        dict(type='FocalLossCost', weight=2.0),
                        dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                        dict(type='IoUCost', iou_mode='giou', weight=2.0),
                    ],
                )
            ),
            test_cfg=dict(max_per_img=300),
        ),
    ),
    proposal_tokens=dict(num_feats=64, pool_size=28),  # 28 x 28: the paper
)

# ------------------------------------------------------------------ data
# COCO instances: mmdet's DINO training scales (480-800 short side, 1333
# long), with masks for the proposal stage
instance_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoiceResize',
        scales=[(s, 1333) for s in range(480, 801, 32)],
        keep_ratio=True,
    ),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
instance_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
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
# ImageNet at 224 (mmpretrain's ResNet recipe)
cls_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmpretrain.RandomResizedCrop', scale=224),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]
cls_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short'),
    dict(type='mmpretrain.CenterCrop', crop_size=224),
    dict(type='mmpretrain.PackInputs'),
]
# COCO captions at 384 x 384: OURS
caption_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='mmpretrain.RandomResizedCrop',
        scale=384,
        crop_ratio_range=(0.5, 1.0),
    ),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs', algorithm_keys=['gt_caption']),
]
caption_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(384, 384), keep_ratio=False),
    dict(type='mmpretrain.PackInputs', algorithm_keys=['gt_caption']),
]

instances = dict(
    type='CocoDataset',
    data_root=coco_root,
    ann_file='annotations/instances_train2017.json',
    data_prefix=dict(img='train2017/'),
    filter_cfg=dict(filter_empty_gt=False, min_size=32),
    pipeline=instance_train_pipeline,
)
imagenet = dict(
    type='mmpretrain.ImageNet',
    data_root=imagenet_root,
    ann_file='meta/train.txt',
    data_prefix='train',
    pipeline=cls_train_pipeline,
)
captions = dict(
    type='CocoImageCaptionsDataset',
    data_root=coco_root,
    ann_file='annotations/captions_train2017.json',
    data_prefix=dict(img='train2017/'),
    pipeline=caption_train_pipeline,
)


def _loader(dataset, batch_size):
    return dict(
        batch_size=batch_size,
        num_workers=4,
        persistent_workers=True,
        drop_last=True,  # equal batches on every rank (retrieval's gather)
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=dataset,
    )


# per GPU, 8 GPUs: OURS (detection as DINO's 2 per GPU)
train_dataloader = dict(
    instance_segmentation=_loader(instances, 2),
    classification=_loader(imagenet, 64),
    captioning=_loader(captions, 32),
    retrieval=_loader(captions, 32),
)


def _val(dataset, batch_size):
    return dict(
        batch_size=batch_size,
        num_workers=2,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset,
    )


val_dataloader = dict(
    instance_segmentation=_val(
        dict(
            instances,
            ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'),
            test_mode=True,
            pipeline=instance_test_pipeline,
        ),
        1,
    ),
    classification=_val(
        dict(
            imagenet,
            ann_file='meta/val.txt',
            data_prefix='val',
            pipeline=cls_test_pipeline,
        ),
        64,
    ),
    captioning=_val(
        dict(
            captions,
            ann_file='annotations/captions_val2017.json',
            data_prefix=dict(img='val2017/'),
            test_mode=True,
            pipeline=caption_test_pipeline,
        ),
        32,
    ),
    retrieval=_val(
        dict(
            captions,
            ann_file='annotations/captions_val2017.json',
            data_prefix=dict(img='val2017/'),
            test_mode=True,
            pipeline=caption_test_pipeline,
        ),
        32,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    instance_segmentation=dict(
        type='CocoMetric',
        ann_file=coco_root + 'annotations/instances_val2017.json',
        metric=['bbox', 'segm'],
    ),
    classification=dict(type='mmpretrain.Accuracy', topk=(1, 5)),
    captioning=dict(type='CaptionMetric'),
    retrieval=dict(type='RetrievalMetric', topk=(1, 5, 10)),
)
test_evaluator = val_evaluator

# --------------------------------------------------------------- schedule
train_cfg = dict(
    type='MultiTaskIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=10000,
    task_ratios=task_ratios,
    strategy='unmixed',
)
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')
find_unused_parameters = True

# MT-AdamW, the paper's betas; lr, weight decay, backbone lr factor and
# clipping: OURS (DINO's lr 1e-4, backbone x 0.1, clip 0.1)
optim_wrapper = dict(
    type='MTAdamWOptimWrapper',
    optimizer=dict(
        type='MTAdamW',
        lr=1e-4,
        betas=(0.1, 0.001),
        weight_decay=0.05,
        task_ratios=task_ratios,
    ),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'logit_scale': dict(decay_mult=0.0),
            'spe': dict(decay_mult=0.0),
            'queries': dict(decay_mult=0.0),
        },
    ),
)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=2000
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=2000,
        end=max_iters,
        T_max=max_iters - 2000,
        eta_min=1e-6,
    ),
]
custom_hooks = [dict(type='TaskAwareOptimizerHook')]
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=5000,
        max_keep_ckpts=3,
    ),
)
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=16)
