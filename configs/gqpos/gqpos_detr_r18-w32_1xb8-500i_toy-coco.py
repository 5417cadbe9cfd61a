# GQPos on the toy DETR: the base config plus these lines.
_base_ = './detr_r18-w32_1xb8-500i_toy-coco.py'
model = dict(
    type='GQPosDETR',
    gqpos=dict(detach=True, shared_mlp=False, mode='add'),
)
