# A plain ViT (192-d, 6 blocks, patch 8) as MultiTaskModel's trunk, ViTDet's
# simple pyramid, mmdet's Deformable DETR as the 'det' task (DetectorTaskHead)
# on the toy COCO set, from scratch. Baseline: the same head on the toy
# ResNet-18 trunk, r18-w32_deformable-detr_1xb8-500i_toy-coco.py.
_base_ = ['./_base_/vit-t8_trunk.py', './_base_/deformable-detr_head.py']
model = dict(tasks=dict(det={{_base_.deformable_detr_task}}))
