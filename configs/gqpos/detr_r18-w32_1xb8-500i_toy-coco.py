# Stock mmdet DETR (GQPos off) shrunk for the toy COCO set on a CPU.
# ResNet-18 at half width, C4 (stride 16: 8 x 8 tokens for 128 px images),
# 256-d transformer (3 encoder / 6 decoder layers, no dropout), 50 queries;
# everything else as mmdet::detr/detr_r50_8xb2-150e_coco.py. Plain DETR
# converges slowly: on the toy set this is a smoke test, not a baseline.
_base_ = './_base_/toy_detr_runtime.py'

embed_dims = 256
attn_cfg = dict(
    embed_dims=embed_dims, num_heads=8, dropout=0.0, batch_first=True
)
ffn_cfg = dict(
    embed_dims=embed_dims,
    feedforward_channels=4 * embed_dims,
    num_fcs=2,
    ffn_drop=0.0,
    act_cfg=dict(type='ReLU', inplace=True),
)
model = dict(
    type='DETR',
    num_queries=50,
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
        num_stages=3,  # C2-C4 only
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2,),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # from scratch: BN statistics must be learnt
        style='pytorch',
        init_cfg=None,
    ),
    neck=dict(
        type='ChannelMapper',
        in_channels=[128],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1,
    ),
    encoder=dict(  # DetrTransformerEncoder
        num_layers=3,
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg),
    ),
    decoder=dict(  # DetrTransformerDecoder
        num_layers=6,
        layer_cfg=dict(
            self_attn_cfg=attn_cfg, cross_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg
        ),
        return_intermediate=True,
    ),
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True),
    bbox_head=dict(
        type='DETRHead',
        num_classes=5,
        embed_dims=embed_dims,
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
    test_cfg=dict(max_per_img=50),
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
