# The toy ViT trunk: mmpretrain's VisionTransformer (192-d, 6 blocks, 3
# heads, patch 8 at 128 px: a 16 x 16 map at stride 8) and ViTDet's simple
# pyramid of its last map at strides 8, 16, 32 (128 channels).
# Gradient checkpointing of the blocks: wrap the backbone,
#   backbone=dict(type='GradientCheckpointing', pattern=r'layers\.\d+',
#                 module=<this backbone>)
# A pretrained ViT: model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint=PATH, prefix=P), P the prefix of its ViT keys: 'image_encoder.'
# for the toy CLIP model of configs/clip (mmpretrain ViT keys:
# `layers.0.attn.qkv.weight`, ...).
_base_ = './toy_single_task.py'
vit_dims = 192
trunk_channels = 128  # every level, both trunks
model = dict(
    backbone=dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(
            embed_dims=vit_dims,
            num_layers=6,
            num_heads=3,
            feedforward_channels=4 * vit_dims,
        ),
        img_size=128,
        patch_size=8,
        out_type='featmap',
        with_cls_token=False,
        drop_path_rate=0.0,
        init_cfg=None,
    ),
    neck=dict(
        type='SimpleFeaturePyramid',
        in_channels=vit_dims,
        out_channels=trunk_channels,
        scale_factors=(1.0, 0.5),
        num_extra_levels=1,
    ),
)
