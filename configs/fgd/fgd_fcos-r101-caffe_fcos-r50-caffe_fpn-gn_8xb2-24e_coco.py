# FGD: FCOS R50 student <- FCOS R101 teacher (paper: 38.5 -> 42.7 COCO mAP).
# Student: mmdet's multi-scale 2x FCOS R50 (38.5 mAP, the paper's baseline),
# whose head matches the teacher's, so init_student copies it exactly (the
# reference's student had biased head convs that its non-strict copy
# silently skipped).
_base_ = [
    'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/fcos/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'  # noqa: E501
levels = [0, 1, 2, 3, 4]
fgd_loss = dict(
    _base_.fgd_loss,
    temp=0.8,
    alpha_fgd=1.6e-3,
    beta_fgd=8e-4,
    gamma_fgd=8e-4,
    lambda_fgd=8e-6,
)

model = dict(
    _delete_=True,
    type='SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=teacher,
    teacher_ckpt=teacher_ckpt,
    init_student=True,
    recorders={
        f'fpn_{i}': dict(
            student=f'neck.fpn_convs.{i}.conv',
            teacher=f'neck.fpn_convs.{i}.conv',
        )
        for i in levels
    },
    distill_losses={f'loss_fgd_fpn_{i}': fgd_loss for i in levels},
    loss_inputs={f'loss_fgd_fpn_{i}': f'fpn_{i}' for i in levels},
)

optim_wrapper = dict(
    constructor='TrainableOptimWrapperConstructor',
    clip_grad=dict(max_norm=35, norm_type=2),
)
train_dataloader = dict(batch_size=2, num_workers=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
