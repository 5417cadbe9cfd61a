# mmdet's Mask2Former (instance segmentation: MaskFormerFusionHead with
# instance_on) after the trunk, CPU-sized: 128-d, 50 queries, a 3-layer
# deformable pixel decoder on the two coarser levels (strides 16, 32; the
# stride-8 level gives the mask features, so masks are predicted at stride 8
# of the 128 px input), a 3-layer transformer decoder, 1024 sampled mask
# points; losses and matching costs as mmdet's COCO config.
# A config puts it in: model = dict(tasks=dict(det={{_base_.mask2former_task}})).
m2f_dims = 128
num_classes = 5
mask2former_task = dict(
    type='DetectorTaskHead',
    detector=dict(
        type='Mask2Former',
        panoptic_head=dict(
            type='Mask2FormerHead',
            in_channels=[128, 128, 128],
            strides=[8, 16, 32],
            feat_channels=m2f_dims,
            out_channels=m2f_dims,
            num_things_classes=num_classes,
            num_stuff_classes=0,
            num_queries=50,
            num_transformer_feat_level=2,
            pixel_decoder=dict(
                type='MSDeformAttnPixelDecoder',
                num_outs=2,
                norm_cfg=dict(type='GN', num_groups=32),
                act_cfg=dict(type='ReLU'),
                encoder=dict(
                    num_layers=3,
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
        test_cfg=dict(
            panoptic_on=False,
            semantic_on=False,
            instance_on=True,
            max_per_image=50,
            iou_thr=0.8,
            filter_low_score=True,
        ),
        init_cfg=None,
    ),
)
# instance masks in the data, bbox and segm mAP
mask2former_pipelines = dict(
    train=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ],
    test=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
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
    ],
)
