# FGD: Faster R-CNN R50 student <- Cascade Mask R-CNN X101-32x4d-DCN teacher
# (paper: 38.4 -> 42.0 COCO mAP). Levels P2-P5 (fpn_convs 0-3; P6 is a
# max-pool without conv). The teacher's heads differ from the student's, so
# init_student stays off, as in the paper.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::dcn/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/dcn/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth'  # noqa: E501
levels = [0, 1, 2, 3]
fgd_loss = dict(
    _base_.fgd_loss,
    alpha_fgd=5e-5,
    beta_fgd=2.5e-5,
    gamma_fgd=5e-5,
    lambda_fgd=5e-7,
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
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2),
)
train_dataloader = dict(batch_size=2, num_workers=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
