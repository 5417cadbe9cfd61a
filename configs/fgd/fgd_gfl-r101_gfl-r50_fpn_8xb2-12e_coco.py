# FGD: GFL R50 student <- GFL R101 teacher (paper: 40.2 -> 43.5 COCO mAP).
# 1x schedule, as the reference.
_base_ = [
    'mmdet::gfl/gfl_r50_fpn_1x_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'  # noqa: E501
levels = [0, 1, 2, 3, 4]
# the shared FGDLoss (T 0.5, 1e-3 / 5e-4 / 5e-4 / 5e-6), as the paper
fgd_loss = dict(_base_.fgd_loss)

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
