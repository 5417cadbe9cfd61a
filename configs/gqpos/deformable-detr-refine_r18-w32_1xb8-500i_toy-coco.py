# The toy Deformable DETR with iterative box refinement (GQPos off).
_base_ = './deformable-detr_r18-w32_1xb8-500i_toy-coco.py'
model = dict(with_box_refine=True)
