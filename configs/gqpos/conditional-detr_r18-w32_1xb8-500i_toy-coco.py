# Stock mmdet Conditional DETR (GQPos off) on the toy COCO set: the toy DETR
# with the changes of
# mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py
# (conditional attention, focal loss). mmdet's Conditional DETR needs
# embed_dims=256 (its decoder hard-codes a 128-feature sine encoding).
_base_ = './detr_r18-w32_1xb8-500i_toy-coco.py'

embed_dims = 256
model = dict(
    type='ConditionalDETR',
    decoder=dict(
        layer_cfg=dict(
            self_attn_cfg=dict(
                _delete_=True,
                embed_dims=embed_dims,
                num_heads=8,
                attn_drop=0.0,
                cross_attn=False,
            ),
            cross_attn_cfg=dict(
                _delete_=True,
                embed_dims=embed_dims,
                num_heads=8,
                attn_drop=0.0,
                cross_attn=True,
            ),
        )
    ),
    bbox_head=dict(
        type='ConditionalDETRHead',
        loss_cls=dict(
            _delete_=True,
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0,
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
)
