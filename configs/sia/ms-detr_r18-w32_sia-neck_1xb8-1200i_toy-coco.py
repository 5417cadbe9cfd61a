# The plain multi-scale DETR baseline of SiA on the toy set: the same
# model, data and schedule with the attention-map fusion off (dense
# multi-scale cross-attention, per-level softmax, outputs summed).
_base_ = './sia-detr_r18-w32_sia-neck_1xb8-1200i_toy-coco.py'

model = dict(decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(fusion=None))))
