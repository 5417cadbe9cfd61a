# Image captioning on the toy COCO set: MultiTaskModel with one task,
# 'caption' (CaptionTaskHead), on the toy ViT trunk of configs/vit_trunk
# (192-d, 6 blocks, patch 8 at 128 px), from scratch, with its schedule.
# The caption head reads the ViT's last map (16 x 16 tokens of 192 dims; no
# pyramid neck) through a 3-layer transformer decoder (256-d, causal
# self-attention with a KV cache, cross-attention over the visual tokens,
# tied embeddings); validation decodes with beam search (3 beams, GNMT
# length penalty 0.6) and reports caption/caption/BLEU-1..4 and CIDEr-D.
#
# The tokenizer file is not shipped; train it first (offline, seconds):
#   python tools/misc/train_tokenizer.py \
#       data/toy_coco/annotations/captions_train.json data/toy_coco/tokenizer.json
# `vocab_size` below is the tool's default --vocab-size (512); a tokenizer
# trained with another one is refused, naming the file.
_base_ = '../vit_trunk/_base_/vit-t8_trunk.py'

data_root = 'data/toy_coco/'
tokenizer_file = data_root + 'tokenizer.json'
vocab_size = 512
max_caption_tokens = 50  # <bos> and <eos> included: every toy caption fits
mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='MultiTaskDataPreprocessor',
        preprocessors=dict(
            caption=dict(
                type='mmpretrain.ClsDataPreprocessor',
                mean=mean,
                std=std,
                to_rgb=True,
                pad_size_divisor=8,  # the ViT's patch
            )
        ),
    ),
    neck=None,  # the caption head reads the ViT's map itself
    tasks=dict(
        caption=dict(
            type='CaptionTaskHead',
            head=dict(
                type='CaptionHead',
                vocab_size=vocab_size,
                in_channels={{_base_.vit_dims}},
                width=256,
                depth=3,
                num_heads=4,
                max_length=max_caption_tokens,
                dropout=0.1,
                label_smoothing=0.1,
                tokenizer=dict(
                    type='BPETokenizer',
                    file=tokenizer_file,
                    vocab_size=vocab_size,
                ),
                # up to max_caption_tokens - 1 generated tokens
                decode_cfg=dict(mode='beam', beam_size=3, length_penalty=0.6),
            ),
        )
    ),
)

# no flip: the captions say where the shapes are (left, right)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=False),
    dict(
        type='mmpretrain.PackInputs',
        algorithm_keys=['gt_caption'],
        meta_keys=['img_id', 'img_path'],
    ),
]
test_pipeline = train_pipeline
caption_dataset = dict(
    type='ToyCocoCaptionsDataset',
    data_root=data_root,
    ann_file='annotations/captions_train.json',
    data_prefix=dict(img=''),
    pipeline=train_pipeline,
)

train_dataloader = dict(
    _delete_=True,
    caption=dict(
        batch_size=8,
        num_workers=1,
        persistent_workers=True,
        sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
        dataset=caption_dataset,
    ),
)
val_dataloader = dict(
    _delete_=True,
    caption=dict(
        batch_size=16,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            caption_dataset,
            ann_file='annotations/captions_val.json',
            test_mode=True,
            pipeline=test_pipeline,
        ),
    ),
)
test_dataloader = val_dataloader
# references: each sample's gt_caption (all captions of the image)
val_evaluator = dict(_delete_=True, caption=dict(type='CaptionMetric'))
test_evaluator = val_evaluator

train_cfg = dict(task_ratios=dict(_delete_=True, caption=1.0))
# the trunk configs' hooks without the detection drawing hook (captions
# are not drawn: tools/test.py --show-dir is not available)
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=-1,
        save_last=True,
        save_best='caption/caption/CIDEr-D',
        rule='greater',
    ),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
