# ViSFT stage 1, instance segmentation: Mask2Former (after its own ViTDet
# pyramid) trained alone on the frozen
# EVA-CLIP ViT-G/14's last map, COCO 2017. Task, data and model:
# _base_/eva-g-p14_coco_three_tasks.py (its 'seg' task only).
# Paper / ViSFT's code: AdamW lr 5e-5, weight decay 1e-4, cosine after a
# 2k-iteration warmup, gradient clipping 0.1, 150k iterations, 8 GPUs x 1
# image. The backbone runs forward only (frozen, eval mode).
# Run: bash tools/dist_train.sh THIS 8 -> work_dirs/<this name>/iter_150000.pth,
# the seg head of the stage-2 config.
_base_ = './_base_/eva-g-p14_coco_three_tasks.py'
max_iters = 150000
warmup_iters = 2000
lr = 5e-5

model = dict(
    data_preprocessor=dict(
        preprocessors=dict(
            _delete_=True,
            seg={{_base_.model.data_preprocessor.preprocessors.seg}},
        )
    ),
    tasks=dict(_delete_=True, seg={{_base_.model.tasks.seg}}),
    freeze=dict(backbone=True),
)
train_dataloader = dict(_delete_=True, seg={{_base_.train_dataloader.seg}})
val_dataloader = dict(_delete_=True, seg={{_base_.val_dataloader.seg}})
test_dataloader = dict(_delete_=True, seg={{_base_.test_dataloader.seg}})
val_evaluator = dict(_delete_=True, seg={{_base_.val_evaluator.seg}})
# (test_* not `= val_*`: one shared dict would be rewritten twice by
# tools/misc/smoke_run.py)
test_evaluator = dict(_delete_=True, seg={{_base_.test_evaluator.seg}})
default_hooks = dict(
    visualization=dict(
        type='MultiTaskVisualizationHook',
        task_hooks=dict(seg=dict(type='DetVisualizationHook')),
    )
)

train_cfg = dict(
    max_iters=max_iters, val_interval=max_iters, task_ratios=dict(seg=1.0)
)
optim_wrapper = dict(optimizer=dict(lr=lr))
# linear warmup from ~0, then cosine to 0 (HF's get_cosine_schedule_with_warmup)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=False,
        begin=0,
        end=warmup_iters,
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters,
        T_max=max_iters - warmup_iters,
        eta_min=0.0,
    ),
]
