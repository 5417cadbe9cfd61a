# Stock mmdet Deformable DETR (GQPos off) shrunk to train from scratch on
# the toy COCO set on a CPU: the baseline of the GQPos on/off comparison.
# ResNet-18 at half width (C3-C5), 128-d transformer (3 encoder / 6 decoder
# layers, no dropout), 50 queries; everything else as
# mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py.
_base_ = './_base_/toy_detr_runtime.py'

embed_dims = 128
model = dict(
    type='DeformableDETR',
    num_queries=50,
    num_feature_levels=4,
    with_box_refine=False,
    as_two_stage=False,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1,
    ),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # from scratch: BN statistics must be learnt
        style='pytorch',
        init_cfg=None,
    ),
    neck=dict(
        type='ChannelMapper',
        in_channels=[64, 128, 256],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=4,
    ),
    encoder=dict(  # DeformableDetrTransformerEncoder
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, batch_first=True),
            ffn_cfg=dict(
                embed_dims=embed_dims,
                feedforward_channels=4 * embed_dims,
                ffn_drop=0.0,
            ),
        ),
    ),
    decoder=dict(  # DeformableDetrTransformerDecoder
        num_layers=6,
        return_intermediate=True,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=embed_dims,
                num_heads=8,
                dropout=0.0,
                batch_first=True,
            ),
            cross_attn_cfg=dict(embed_dims=embed_dims, batch_first=True),
            ffn_cfg=dict(
                embed_dims=embed_dims,
                feedforward_channels=4 * embed_dims,
                ffn_drop=0.0,
            ),
        ),
        post_norm_cfg=None,
    ),
    positional_encoding=dict(
        num_feats=embed_dims // 2, normalize=True, offset=-0.5
    ),
    bbox_head=dict(
        type='DeformableDETRHead',
        num_classes=5,
        embed_dims=embed_dims,
        sync_cls_avg_factor=True,
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
    test_cfg=dict(max_per_img=50),
)

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'sampling_offsets': dict(lr_mult=0.1),
            'reference_points': dict(lr_mult=0.1),
        }
    )
)

max_iters = 500
warmup_iters = 50
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
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
