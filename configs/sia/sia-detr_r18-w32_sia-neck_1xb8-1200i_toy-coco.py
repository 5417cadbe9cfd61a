# SiA-DETR shrunk to train from scratch on the toy COCO set on a CPU:
# ResNet-18 at half width (no pretrained weights), SiAFusionNeck over
# strides 4-32 (4 levels, 4x4 ... 32x32 at 128 px), a 2-layer encoder on
# the coarsest level, 3 decoder layers with dense multi-scale
# cross-attention and SiA probability mixing, 20 queries, box refinement,
# AdamW + cosine, 1200 iterations.
# The plain multi-scale baseline (fusion off, all else equal) is
# ms-detr_r18-w32_sia-neck_1xb8-1200i_toy-coco.py; see README.md.
_base_ = [
    '../_base_/datasets/toy_coco_detection.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

embed_dims = 128
num_levels = 4
num_heads = 8
ffn_cfg = dict(
    embed_dims=embed_dims,
    feedforward_channels=4 * embed_dims,
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type='ReLU', inplace=True),
)
self_attn_cfg = dict(
    embed_dims=embed_dims, num_heads=num_heads, dropout=0.0, batch_first=True
)
model = dict(
    type='SiADETR',
    num_queries=20,  # toy images hold at most 4 objects
    # NOTE departures for a from-scratch CPU schedule (Conditional DETR's
    # reference points and decoupled spatial query started local, and
    # Deformable DETR's box refinement; see README): without them the
    # plain baseline stays below 0.1 bbox mAP in 1000 iterations
    with_reference=True,
    with_box_refine=True,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        # a multiple of the coarsest stride: exact 2x levels (SiADETR checks)
        pad_size_divisor=32,
    ),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # from scratch: BN statistics must be learnt
        style='pytorch',
        init_cfg=None,
    ),
    neck=dict(
        type='SiAFusionNeck',
        in_channels=[32, 64, 128, 256],
        out_channels=embed_dims,
        gate=None,
    ),
    encoder=dict(  # DetrTransformerEncoder, on the coarsest level only
        num_layers=2,
        layer_cfg=dict(self_attn_cfg=self_attn_cfg, ffn_cfg=ffn_cfg),
    ),
    decoder=dict(  # SiATransformerDecoder
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=self_attn_cfg,
            cross_attn_cfg=dict(  # SiAMultiScaleAttention
                embed_dims=embed_dims,
                num_heads=num_heads,
                num_levels=num_levels,
                fusion='prob',
                spatial_query=True,
                spatial_init=4.0,  # a local start (README: Toy results)
                dropout=0.0,
            ),
            ffn_cfg=ffn_cfg,
        ),
        return_intermediate=True,
    ),
    # 2 cycles per image at the highest frequency (DETR's: 1) and
    # frequencies down to 1/20 of it (DETR's: 1/10000): with spatial_init
    # the heads start with attention windows of ~1/10 to ~1/2 of the image
    positional_encoding=dict(
        num_feats=embed_dims // 2,
        normalize=True,
        offset=-0.5,
        temperature=20,
        scale=12.566370614359172,  # 4 pi
    ),
    # NOTE sigmoid focal classification (as mmdet's Deformable DETR)
    # instead of DETR's softmax cross-entropy: it learns faster from
    # scratch in a short schedule; the COCO configs keep DETR's head.
    bbox_head=dict(
        # boxes relative to each layer's reference, one branch per layer
        type='DeformableDETRHead',
        share_pred_layer=False,
        num_pred_layer=3,
        as_two_stage=False,
        num_classes=5,
        embed_dims=embed_dims,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0,
        ),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
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
    test_cfg=dict(max_per_img=20),
)

max_iters = 1200
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),  # DETR's
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=100,
        end=max_iters,
        T_max=max_iters - 100,
        eta_min=5e-6,
    ),
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1,
    ),
)
log_processor = dict(by_epoch=False)

# 1 process x 8 images; --auto-scale-lr rescales lr for other batch sizes.
auto_scale_lr = dict(enable=False, base_batch_size=8)
