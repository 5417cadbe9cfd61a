# The plain multi-scale DETR baseline of SiA on COCO: the same model with
# the attention-map fusion off.
_base_ = './sia-detr_r50_sia-neck_8xb2-150e_coco.py'

model = dict(decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(fusion=None))))
