# GQPos on mmdet's Deformable DETR R50 with iterative box refinement
# (50 epochs, COCO).
_base_ = 'mmdet::deformable_detr/deformable-detr-refine_r50_16xb2-50e_coco.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)
model = dict(
    type='GQPosDeformableDETR',
    gqpos=dict(detach=True, shared_mlp=False, mode='add'),
)
