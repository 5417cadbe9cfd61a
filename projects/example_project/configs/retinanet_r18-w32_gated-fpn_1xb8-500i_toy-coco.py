_base_ = [
    '../../../configs/toy/retinanet_r18-w32_fpn_gn-head_1xb8-500i_toy-coco.py'
]

custom_imports = dict(
    imports=['mmvfm', 'projects.example_project.gated_fpn'],
    allow_failed_imports=False,
)

model = dict(neck=dict(type='GatedFPN'))
