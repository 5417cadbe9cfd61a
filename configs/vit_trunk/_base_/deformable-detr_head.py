# mmdet's Deformable DETR (no refinement, single stage) after the trunk, as
# the toy Deformable DETR of configs/gqpos: 128-d, 3 encoder / 6 decoder
# layers, 50 queries, no dropout. Its ChannelMapper takes the trunk's three
# 128-channel levels (strides 8, 16, 32) and adds a fourth (stride 64).
# A config puts it in: model = dict(tasks=dict(det={{_base_.deformable_detr_task}})).
# Deformable DETR and not DINO: mmdet 3.3's DINO is 256-d only, and a 128-d
# transformer is what trains on a CPU in minutes.
detr_dims = 128
deformable_detr_task = dict(
    type='DetectorTaskHead',
    detector=dict(
        type='DeformableDETR',
        num_queries=50,
        num_feature_levels=4,
        with_box_refine=False,
        as_two_stage=False,
        neck=dict(
            type='ChannelMapper',
            in_channels=[128, 128, 128],
            kernel_size=1,
            out_channels=detr_dims,
            act_cfg=None,
            norm_cfg=dict(type='GN', num_groups=32),
            num_outs=4,
        ),
        encoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=detr_dims, batch_first=True),
                ffn_cfg=dict(
                    embed_dims=detr_dims,
                    feedforward_channels=4 * detr_dims,
                    ffn_drop=0.0,
                ),
            ),
        ),
        decoder=dict(
            num_layers=6,
            return_intermediate=True,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=detr_dims,
                    num_heads=8,
                    dropout=0.0,
                    batch_first=True,
                ),
                cross_attn_cfg=dict(embed_dims=detr_dims, batch_first=True),
                ffn_cfg=dict(
                    embed_dims=detr_dims,
                    feedforward_channels=4 * detr_dims,
                    ffn_drop=0.0,
                ),
            ),
            post_norm_cfg=None,
        ),
        positional_encoding=dict(
            num_feats=detr_dims // 2, normalize=True, offset=-0.5
        ),
        bbox_head=dict(
            type='DeformableDETRHead',
            num_classes=5,
            embed_dims=detr_dims,
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
                    dict(
                        type='BBoxL1Cost',
                        weight=5.0,
                        box_format='xywh',
                    ),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0),
                ],
            )
        ),
        test_cfg=dict(max_per_img=50),
    ),
)
