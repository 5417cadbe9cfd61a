# GQPos on mmdet's DETR R50 (150 epochs, COCO): the stock config plus the
# GQPos switch; every other field is the base detector's.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)
model = dict(
    type='GQPosDETR',
    gqpos=dict(detach=True, shared_mlp=False, mode='add'),
)
