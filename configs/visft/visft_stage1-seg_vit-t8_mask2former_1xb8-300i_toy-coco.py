# ViSFT stage 1, instance segmentation, on the toy set: the Mask2Former head
# (with its own pyramid) trained alone on the frozen toy CLIP ViT's last
# map. Task, data and model: _base_/toy_three_tasks.py (its 'seg' task only).
#
# Recipe: as the det config (visft_stage1-det_...): the paper's lr for
# det and seg (5e-5) x 8 = 4e-4 for the toy, AdamW weight decay 1e-4,
# clipping 0.1, 300 iterations with 50 of warmup then cosine to 0; ~4 min
# with one thread (measured 0.7 s/iteration while three other trainings
# shared the 2-core CPU).
# Run: python tools/train.py THIS -> work_dirs/<this name>/iter_300.pth,
# the seg head of the stage-2 config.
_base_ = './_base_/toy_three_tasks.py'
max_iters = 300
warmup_iters = 50
lr = 4e-4

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
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=dict(_delete_=True, seg=1.0),
)
optim_wrapper = dict(optimizer=dict(lr=lr))
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
