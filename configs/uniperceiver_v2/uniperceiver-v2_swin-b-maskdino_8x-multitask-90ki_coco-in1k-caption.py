# Uni-Perceiver v2-Base: the R50 config with the paper's Swin-B backbone
# (ImageNet-22k, 384 px, window 12; the paper's headline model: IN-1k 86.3,
# COCO det 58.6 / inst-seg 50.6, caption B@4 35.4, retrieval R@1 71.8 /
# 55.6 -- the paper's numbers). Its C3-C5 (256 / 512 / 1024 channels) feed
# the proposal stage; C5 the global and map tokens.
_base_ = (
    './uniperceiver-v2_r50-maskdino_8x-multitask-90ki_coco-in1k-caption.py'
)
pretrained = (
    'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/'
    'swin_base_patch4_window12_384_22k.pth'
)
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,  # OURS (mmdet's Swin-B detection setting)
        patch_norm=True,
        out_indices=(1, 2, 3),
        with_cp=False,
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    image_channels=1024,
    proposer=dict(detector=dict(neck=dict(in_channels=[256, 512, 1024]))),
)
# no weight decay on Swin's position tables and norms (mmdet's Swin recipe)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
        }
    )
)
