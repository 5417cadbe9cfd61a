# What the FGD configs in configs/fgd/ share. A config lists it after its
# student's config,
#   _base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py',
#             './_base_/fgd_distiller.py']
# and writes its diff: the teacher, the hooked levels, FGDLoss's channels,
# temperature and weights (fgd_loss = dict(_base_.fgd_loss, ...)), and the
# distiller dict built from them.
#
# Why the distiller dict itself is not here: mmengine merges bases as data
# and forbids a key in two bases of one config, so a base cannot define
# `model` next to the student's config (which has one), nor build the
# per-level recorders / distill_losses / loss_inputs from the levels of the
# config that inherits it (a base is read before, and without, that
# config). Only the values below can be shared without adding keys to the
# configs.

# the paper's RetinaNet / GFL setting (256-channel FPN levels)
fgd_loss = dict(
    type='FGDLoss',
    student_channels=256,
    teacher_channels=256,
    temp=0.5,
    alpha_fgd=1e-3,
    beta_fgd=5e-4,
    gamma_fgd=5e-4,
    lambda_fgd=5e-6,
)
# as the reference configs (DDP)
find_unused_parameters = True
