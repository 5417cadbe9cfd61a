# SiA-DETR on COCO: mmdet's DETR (R50, 150 epochs, 8 GPUs x 2 images) with
# C3-C5 fused by SiAFusionNeck into 3 levels of exactly 2x size (strides
# 32, 16, 8, coarse to fine), the encoder on the coarsest level and a
# decoder whose cross-attention attends densely to all levels with SiA
# probability mixing. Only the diff from the DETR config is written here.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

model = dict(
    type='SiADETR',
    # a multiple of the coarsest stride: exact 2x levels (SiADETR checks)
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(out_indices=(1, 2, 3)),
    neck=dict(
        _delete_=True,
        type='SiAFusionNeck',
        in_channels=[512, 1024, 2048],
        out_channels=256,
    ),
    decoder=dict(
        layer_cfg=dict(
            # SiAMultiScaleAttention (embed_dims, num_heads, dropout from
            # DETR's MultiheadAttention config)
            cross_attn_cfg=dict(num_levels=3, fusion='prob'),
        )
    ),
    # positions at cell centres: a coarse cell's is its children's mean
    positional_encoding=dict(offset=-0.5),
)
