# The baseline of vit-t8_sfp_mask2former_1xb8-500i_toy-coco.py: the same
# Mask2Former task head and schedule on the toy ResNet-18 trunk.
_base_ = ['./_base_/r18-w32_trunk.py', './_base_/mask2former_head.py']
model = dict(tasks=dict(det={{_base_.mask2former_task}}))
train_dataloader = dict(
    det=dict(dataset=dict(pipeline={{_base_.mask2former_pipelines.train}}))
)
val_dataloader = dict(
    det=dict(dataset=dict(pipeline={{_base_.mask2former_pipelines.test}}))
)
test_dataloader = val_dataloader
val_evaluator = dict(det=dict(metric=['bbox', 'segm']))
test_evaluator = val_evaluator
