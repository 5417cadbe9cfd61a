# FGD: RetinaNet R50 student <- RetinaNet X101-64x4d teacher (paper: 37.4 ->
# 40.7 COCO mAP). 8 GPUs x 2 images, 2x schedule, SGD lr 0.01, grad clip 35.
# Override the teacher weights with --cfg-options model.teacher_ckpt=PATH.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
    './_base_/fgd_distiller.py',
]
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

teacher = 'mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'
teacher_ckpt = 'https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_x101_64x4d_fpn_1x_coco/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'  # noqa: E501
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
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2),
)
train_dataloader = dict(batch_size=2, num_workers=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
