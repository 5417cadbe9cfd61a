# The toy ResNet-18 trunk at half width (the baseline): C3-C5 (strides 8,
# 16, 32; 64, 128, 256 channels), as the toy detectors of configs/toy and
# configs/gqpos, from scratch (BN statistics learnt), mapped to 128 channels
# per level as the ViT trunk's pyramid (1x1 conv + GroupNorm).
_base_ = './toy_single_task.py'
trunk_channels = 128  # every level, both trunks
model = dict(
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=32,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None,
    ),
    neck=dict(
        type='ChannelMapper',
        in_channels=[64, 128, 256],
        kernel_size=1,
        out_channels=trunk_channels,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=3,
    ),
)
