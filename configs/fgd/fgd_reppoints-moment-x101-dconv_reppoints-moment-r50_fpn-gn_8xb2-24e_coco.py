# FGD: RepPoints R50 student <- RepPoints X101-DCN teacher (paper: 38.6 -> 42.0
# COCO mAP).
_base_ = [
    'mmdet::reppoints/reppoints-moment_r50_fpn-gn_head-gn_2x_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::reppoints/reppoints-moment_x101-dconv-c3-c5_fpn-gn_head-gn_2x_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/reppoints/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco/reppoints_moment_x101_fpn_dconv_c3-c5_gn-neck%2Bhead_2x_coco_20200329-f87da1ea.pth'  # noqa: E501
levels = [0, 1, 2, 3, 4]
fgd_loss = dict(
    _base_.fgd_loss,
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
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2),
)
train_dataloader = dict(batch_size=2, num_workers=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
