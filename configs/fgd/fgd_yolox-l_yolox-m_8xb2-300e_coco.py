# FGD: YOLOX-m student <- YOLOX-l teacher (paper: 45.9 -> 46.6 COCO mAP).
# 192 -> 256 channels: the pair that exercises FGDLoss.align. Recorded
# at neck.out_convs.{0,1,2} as the reference. 8 GPUs x 2 images (YOLOX
# itself uses 8 x 8): the learning rate is scaled linearly, 0.01 * 16 / 64.
# YOLOX's hooks reach the student through the distiller (bbox_head etc.).
_base_ = [
    'mmdet::yolox/yolox_m_8xb8-300e_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::yolox/yolox_l_8xb8-300e_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/yolox/yolox_l_8x8_300e_coco/yolox_l_8x8_300e_coco_20211126_140236-d3bd2b23.pth'  # noqa: E501
levels = [0, 1, 2]
fgd_loss = dict(
    _base_.fgd_loss,
    student_channels=192,
    alpha_fgd=2e-3,
    beta_fgd=1e-3,
    gamma_fgd=1e-3,
    lambda_fgd=1e-5,
)

model = dict(
    _delete_=True,
    type='SingleTeacherDistiller',
    student={{_base_.model}},
    teacher=teacher,
    teacher_ckpt=teacher_ckpt,
    init_student=False,
    recorders={
        f'fpn_{i}': dict(
            student=f'neck.out_convs.{i}', teacher=f'neck.out_convs.{i}'
        )
        for i in levels
    },
    distill_losses={f'loss_fgd_fpn_{i}': fgd_loss for i in levels},
    loss_inputs={f'loss_fgd_fpn_{i}': f'fpn_{i}' for i in levels},
)

optim_wrapper = dict(
    constructor='TrainableOptimWrapperConstructor',
    optimizer=dict(lr=0.01 * 16 / 64),
)
train_dataloader = dict(batch_size=2, num_workers=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
