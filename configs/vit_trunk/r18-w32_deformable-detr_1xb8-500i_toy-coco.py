# The baseline of vit-t8_sfp_deformable-detr_1xb8-500i_toy-coco.py: the same
# Deformable DETR task head and schedule on the toy ResNet-18 trunk.
_base_ = ['./_base_/r18-w32_trunk.py', './_base_/deformable-detr_head.py']
model = dict(tasks=dict(det={{_base_.deformable_detr_task}}))
