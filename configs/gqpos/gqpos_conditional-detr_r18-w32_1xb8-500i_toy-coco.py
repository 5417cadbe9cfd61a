# GQPos on the toy Conditional DETR: the base config plus these lines.
_base_ = './conditional-detr_r18-w32_1xb8-500i_toy-coco.py'
model = dict(
    type='GQPosConditionalDETR',
    gqpos=dict(detach=True, shared_mlp=False, mode='add'),
)
