# Uni-Perceiver v2, part 1, on the toy COCO set: classification (the
# dominant shape, 5 class names), captioning (the vocabulary, token by
# token) and image-text retrieval (the global batch) in one model, one task
# per iteration for every rank ('unmixed'), trained with MT-AdamW (TBGN),
# every task evaluated by its own metric in one val loop: top-1,
# BLEU-4 / CIDEr-D, R@1/5/10.
#
# Model (configs/uniperceiver_v2/README.md: the paper's facts vs our
# choices): the toy ViT of configs/vit_trunk and configs/clip (192-d, 6
# blocks, patch 8) at 64 px -> 64 map tokens + 4 global tokens (attention
# pooling); the CLIP config's text encoder (3 layers, 128-d, causal); a
# task-agnostic decoder of 2 BERT layers, 128-d (the paper: 6 layers,
# 768-d); one learnable temperature.
#
# Budget: 1200 iterations of batch 32 (~400 per task), ~0.6 s per
# iteration with one thread on the 2-core CPU: about 12 min per run plus
# ~1 min of validation (beam search over 200 images).
#
# The tokenizer file is not shipped; train it first (offline, seconds):
#   python tools/misc/train_tokenizer.py \
#       data/toy_coco/annotations/captions_train.json data/toy_coco/tokenizer.json
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

data_root = 'data/toy_coco/'
vocab_size = 512
img_size = 64
dims = 128
classes = ['circle', 'square', 'triangle', 'ring', 'cross']
mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
max_iters = 1200
task_ratios = dict(classification=1.0, captioning=1.0, retrieval=1.0)

preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor', mean=mean, std=std, to_rgb=True
)
model = dict(
    type='UniPerceiverV2',
    data_preprocessor=dict(
        type='MultiTaskDataPreprocessor',
        preprocessors={task: preprocessor for task in task_ratios},
    ),
    backbone=dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(
            embed_dims=192,
            num_layers=6,
            num_heads=3,
            feedforward_channels=4 * 192,
        ),
        img_size=img_size,
        patch_size=8,
        out_type='featmap',
        with_cls_token=False,
        drop_path_rate=0.0,
        init_cfg=None,
    ),
    image_channels=192,
    num_global=4,
    global_heads=4,
    text_encoder=dict(
        type='TextTransformer',
        vocab_size=vocab_size,
        width=128,
        depth=3,
        num_heads=4,
        max_length=50,
        causal=True,
        pool='eos',
    ),
    tokenizer=dict(
        type='BPETokenizer',
        file=data_root + 'tokenizer.json',
        vocab_size=vocab_size,
        max_length=50,
    ),
    decoder=dict(type='TaskAgnosticDecoder', dims=dims, depth=2, num_heads=4),
    loss=dict(init_temperature=0.07, max_scale=100.0),
    tasks=dict(
        classification=dict(type='classification', classes=classes),
        captioning=dict(
            type='captioning',
            decode_cfg=dict(
                mode='beam', beam_size=3, max_length=30, length_penalty=0.6
            ),
        ),
        retrieval=dict(type='retrieval', gather=True),
    ),
)

image_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
]
captions_pipeline = image_pipeline + [
    dict(type='mmpretrain.PackInputs', algorithm_keys=['gt_caption'])
]
cls_pipeline = image_pipeline + [dict(type='mmpretrain.PackInputs')]
captions = dict(
    type='ToyCocoCaptionsDataset',
    data_root=data_root,
    ann_file='annotations/captions_train.json',
    data_prefix=dict(img=''),
    pipeline=captions_pipeline,
)
classification = dict(
    type='mmpretrain.ToyClassificationDataset',
    data_root=data_root,
    ann_file='annotations/classification_train.json',
    data_prefix='',
    pipeline=cls_pipeline,
)
train_loader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    drop_last=True,  # equal batches on every rank (retrieval's gather)
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
)
train_dataloader = dict(
    classification=dict(train_loader, dataset=classification),
    captioning=dict(train_loader, dataset=captions),
    retrieval=dict(train_loader, dataset=captions),
)
val_loader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_captions = dict(
    captions, ann_file='annotations/captions_val.json', test_mode=True
)
val_dataloader = dict(
    classification=dict(
        val_loader,
        dataset=dict(
            classification,
            ann_file='annotations/classification_val.json',
            test_mode=True,
        ),
    ),
    captioning=dict(val_loader, dataset=val_captions),
    retrieval=dict(val_loader, dataset=val_captions),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    classification=dict(type='mmpretrain.Accuracy', topk=(1,)),
    captioning=dict(type='CaptionMetric'),
    retrieval=dict(type='RetrievalMetric', topk=(1, 5, 10)),
)
test_evaluator = val_evaluator

train_cfg = dict(
    type='MultiTaskIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=task_ratios,
    strategy='unmixed',
)
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')
# each iteration leaves the other tasks' parameters without gradients
find_unused_parameters = True

# MT-AdamW with the paper's betas (its convention: the weight of the new
# gradient; AdamW's 0.9 / 0.999), its ratios those of the task draws. lr
# 2e-4, not the toy CLIP's 1e-3: at 1e-3 the post-norm decoder collapsed
# the class candidates onto one direction (cosine 1.0) and no task learned
# in 350 iterations (losses at chance), while 1e-4 and 3e-4 overfit a
# fixed batch in 20 steps; MT-AdamW's steps are also larger than AdamW's
# (a parameter every task shares gets beta / s_k = 3 beta of each
# gradient, and there is no bias correction).
optim_wrapper = dict(
    type='MTAdamWOptimWrapper',
    optimizer=dict(
        type='MTAdamW',
        lr=2e-4,
        betas=(0.1, 0.001),
        weight_decay=0.05,
        task_ratios=task_ratios,
    ),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'logit_scale': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.0),
            'spe': dict(decay_mult=0.0),
            'queries': dict(decay_mult=0.0),
        },
    ),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        T_max=max_iters - 50,
        eta_min=2e-6,
    ),
]
custom_hooks = [dict(type='TaskAwareOptimizerHook')]
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=-1,
        save_last=True,
    ),
)
log_processor = dict(by_epoch=False)
visualizer = dict(
    type='Visualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer',
)
