# ViSFT stage 1, captioning, on the toy set: the caption head (our
# transformer CaptionHead of configs/captioning; the paper's is an
# attention LSTM) trained alone on the frozen toy CLIP ViT's last map.
# Task, data and model: _base_/toy_three_tasks.py (its 'caption' task only).
# Needs the tokenizer file (configs/captioning/README.md).
#
# Recipe: the paper's captioning lr (4e-4, 8x its det/seg lr) x 8 = 3.2e-3
# for the toy (as the det config: all lrs x 8, ratios kept), AdamW weight
# decay 1e-4, clipping 0.1, 300 iterations with 50 of warmup then cosine
# to 0; ~3 min with one thread (measured 0.6 s/iteration while three
# other trainings shared the 2-core CPU; the loss fell 4.7 -> 2.3 in 150
# iterations from the toy CLIP ViT, no sign of the lr being too high).
# Run: python tools/train.py THIS -> work_dirs/<this name>/iter_300.pth,
# the caption head of the stage-2 config.
_base_ = './_base_/toy_three_tasks.py'
max_iters = 300
warmup_iters = 50
lr = 3.2e-3

model = dict(
    data_preprocessor=dict(
        preprocessors=dict(
            _delete_=True,
            caption={{_base_.model.data_preprocessor.preprocessors.caption}},
        )
    ),
    tasks=dict(_delete_=True, caption={{_base_.model.tasks.caption}}),
    freeze=dict(backbone=True),
)
train_dataloader = dict(
    _delete_=True, caption={{_base_.train_dataloader.caption}}
)
val_dataloader = dict(_delete_=True, caption={{_base_.val_dataloader.caption}})
test_dataloader = dict(
    _delete_=True, caption={{_base_.test_dataloader.caption}}
)
val_evaluator = dict(_delete_=True, caption={{_base_.val_evaluator.caption}})
# (test_* not `= val_*`: one shared dict would be rewritten twice by
# tools/misc/smoke_run.py)
test_evaluator = dict(_delete_=True, caption={{_base_.test_evaluator.caption}})

train_cfg = dict(
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=dict(_delete_=True, caption=1.0),
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
