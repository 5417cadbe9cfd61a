# A plain ViT (192-d, 6 blocks, patch 8) as MultiTaskModel's trunk, ViTDet's
# simple pyramid, mmdet's Mask2Former (instance masks) as the task head on
# the toy COCO set, from scratch. Baseline: r18-w32_mask2former_1xb8-500i_toy-coco.py.
_base_ = ['./_base_/vit-t8_trunk.py', './_base_/mask2former_head.py']
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
