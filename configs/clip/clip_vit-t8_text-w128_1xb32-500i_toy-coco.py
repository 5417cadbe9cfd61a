# A CLIP-style toy foundation model on the toy COCO set: the ViT of
# configs/vit_trunk (192-d, 6 blocks, patch 8 at 128 px, mean-pooled) and a
# 3-layer causal text transformer (128-d), trained by symmetric InfoNCE on
# the toy captions (one of each image's five per step). Validation in one
# loop: image-text retrieval on the val captions (R@1/5/10 both ways) and
# zero-shot classification of each val image's dominant shape from class-name
# prompts. Needs the tokenizer file first:
#   python tools/misc/train_tokenizer.py \
#       data/toy_coco/annotations/captions_train.json data/toy_coco/tokenizer.json
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmvfm'], allow_failed_imports=False)

data_root = 'data/toy_coco/'
# the tokenizer's size (train_tokenizer.py --vocab-size, default 512); checked
# against the file when it loads
vocab_size = 512
embed_dims = 128
vit_dims = 192
# pre-trained at half the trunk's resolution (64 px: 8 x 8 patches, 4x fewer
# tokens); mmpretrain interpolates pos_embed when the trunk loads it at 128
img_size = 64
classes = ['circle', 'square', 'triangle', 'ring', 'cross']
mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

model = dict(
    type='CLIP',
    data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor', mean=mean, std=std, to_rgb=True
    ),
    # same arch and keys as configs/vit_trunk/_base_/vit-t8_trunk.py
    image_encoder=dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(
            embed_dims=vit_dims,
            num_layers=6,
            num_heads=3,
            feedforward_channels=4 * vit_dims,
        ),
        img_size=img_size,
        patch_size=8,
        out_type='featmap',
        with_cls_token=False,
        drop_path_rate=0.0,
        init_cfg=None,
    ),
    text_encoder=dict(
        type='TextTransformer',
        vocab_size=vocab_size,
        width=128,
        depth=3,
        num_heads=4,
        max_length=40,
        causal=True,
        pool='eos',
        proj_dims=embed_dims,
    ),
    tokenizer=dict(
        type='BPETokenizer', file=data_root + 'tokenizer.json', max_length=40
    ),
    embed_dims=embed_dims,
    loss=dict(type='ContrastiveLoss', init_temperature=0.07, max_scale=100.0),
    zero_shot=dict(
        classes=classes,
        templates=[
            'a {}',
            'an image of a {}',
            'a picture showing a {}',
            'a {} on a textured background',
        ],
    ),
)

# no flip: the captions name left and right
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='mmpretrain.PackInputs', algorithm_keys=['gt_caption']),
]
test_pipeline = train_pipeline
cls_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='mmpretrain.PackInputs'),
]
captions_dataset = dict(
    type='ToyCocoCaptionsDataset',
    data_root=data_root,
    ann_file='annotations/captions_train.json',
    data_prefix=dict(img=''),
    pipeline=train_pipeline,
)
train_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=captions_dataset,
)
val_dataloader = dict(
    retrieval=dict(
        batch_size=32,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            captions_dataset,
            ann_file='annotations/captions_val.json',
            test_mode=True,
            pipeline=test_pipeline,
        ),
    ),
    zero_shot=dict(
        batch_size=32,
        num_workers=1,
        persistent_workers=True,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='mmpretrain.ToyClassificationDataset',
            data_root=data_root,
            ann_file='annotations/classification_val.json',
            data_prefix='',
            test_mode=True,
            pipeline=cls_pipeline,
        ),
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    retrieval=dict(type='RetrievalMetric', topk=(1, 5, 10)),
    zero_shot=dict(type='mmpretrain.Accuracy', topk=(1,)),
)
test_evaluator = val_evaluator

max_iters = 500
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters
)
val_cfg = dict(type='MultiTaskValLoop')
test_cfg = dict(type='MultiTaskTestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    # no decay on the temperature, norms and biases (as CLIP)
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'logit_scale': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.0),
        },
    ),
    clip_grad=dict(max_norm=1.0, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        T_max=max_iters - 50,
        eta_min=1e-5,
    ),
]
# mmdet's hooks without its DetVisualizationHook: nothing to draw, the
# predictions are embeddings and class scores
default_hooks = dict(
    _delete_=True,
    timer=dict(type='IterTimerHook'),
    param_scheduler=dict(type='ParamSchedulerHook'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(
        type='AtomicCheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1,
    ),
)
log_processor = dict(by_epoch=False)
