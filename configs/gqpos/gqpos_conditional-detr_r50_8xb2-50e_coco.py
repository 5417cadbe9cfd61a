# GQPos on mmdet's Conditional DETR R50 (50 epochs, COCO).
_base_ = 'mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)
model = dict(
    type='GQPosConditionalDETR',
    gqpos=dict(detach=True, shared_mlp=False, mode='add'),
)
