# The toy Deformable DETR and Mask2Former heads of configs/vit_trunk, each
# with its own copy of the trunk's ViTDet pyramid (SimpleFeaturePyramid) as
# the first part of the head, instead of one pyramid shared by the trunk:
# ViSFT trains each head separately on the frozen backbone's last map
# (stage 1) and keeps all of them, frozen, in stage 2, so a pyramid trained
# with one head belongs to that head (checkpoint keys
# `heads.<task>.detector.neck.*`). Deformable DETR: pyramid then its
# ChannelMapper (a list of neck configs is built as one Sequential);
# Mask2Former: the pyramid alone (its pixel decoder takes the levels).
_base_ = [
    '../../vit_trunk/_base_/deformable-detr_head.py',
    '../../vit_trunk/_base_/mask2former_head.py',
]
# as configs/vit_trunk/_base_/vit-t8_trunk.py: the 192-d ViT's last map
# (stride 8) -> strides 8, 16, 32 at 128 channels
head_pyramid = dict(
    type='SimpleFeaturePyramid',
    in_channels=192,
    out_channels=128,
    scale_factors=(1.0, 0.5),
    num_extra_levels=1,
)
deformable_detr_task = dict(
    detector=dict(
        neck=[
            head_pyramid,
            # the ChannelMapper of deformable-detr_head.py
            dict(
                type='ChannelMapper',
                in_channels=[128, 128, 128],
                kernel_size=1,
                out_channels=128,
                act_cfg=None,
                norm_cfg=dict(type='GN', num_groups=32),
                num_outs=4,
            ),
        ]
    )
)
mask2former_task = dict(detector=dict(neck=head_pyramid))
