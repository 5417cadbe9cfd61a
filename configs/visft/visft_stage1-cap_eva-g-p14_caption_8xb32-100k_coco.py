# ViSFT stage 1, captioning: the caption head (our transformer CaptionHead;
# the paper's is an attention LSTM) trained alone on the frozen EVA-CLIP
# ViT-G/14's last map (224 px), COCO 2017 captions. Task, data and model:
# _base_/eva-g-p14_coco_three_tasks.py (its 'caption' task only; it needs
# the tokenizer file, see there).
# Paper / ViSFT's code: AdamW lr 4e-4, weight decay 1e-4, cosine after a
# 2k-iteration warmup, gradient clipping 0.1, 100k iterations, batch 256
# (8 GPUs x 32 images).
# Run: bash tools/dist_train.sh THIS 8 -> work_dirs/<this name>/iter_100000.pth,
# the caption head of the stage-2 config.
_base_ = './_base_/eva-g-p14_coco_three_tasks.py'
max_iters = 100000
warmup_iters = 2000
lr = 4e-4

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
    max_iters=max_iters, val_interval=max_iters, task_ratios=dict(caption=1.0)
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
