# ViSFT stage 2 on EVA-CLIP ViT-G/14 and COCO 2017: the three stage-1 heads
# loaded and frozen, only LoRA adapters trained -- on the q and v parts of
# every block's fused qkv (not k), rank 64, alpha 1 (scaling 1/64), dropout
# 0 -- on the three tasks jointly (one task per iteration, drawn
# caption 0.4 / seg 0.3 / det 0.3, every rank the same task: 'unmixed'),
# with gradient checkpointing of the 40 blocks and the model sharded by
# FSDP2 (one unit per block). Tasks, data and model:
# _base_/eva-g-p14_coco_three_tasks.py.
# Paper / ViSFT's code: AdamW lr 1e-5 (the LoRA parameters: ViSFT's
# lr_backbone), weight decay 1e-4, cosine after a 2k-iteration warmup,
# gradient clipping 0.1, 100k iterations, det / seg 8 GPUs x 1 image,
# caption 8 GPUs x 8 images.
#
# Needs the three stage-1 checkpoints (paths below, or --cfg-options
# model.tasks.det.init_cfg.checkpoint=PATH ...): each head loads its
# `heads.<task>.` keys; the backbone is EVA-CLIP's again (frozen in
# stage 1). Keys that do not match fail at build time, naming them.
# Run: bash tools/dist_train.sh THIS 8 (FSDP2 needs the distributed
# launcher; without one the Runner does not wrap the model). The LoRA
# weights alone: mmvfm.models.peft.save_lora(model.backbone, PATH)
# (configs/visft/README.md).
_base_ = './_base_/eva-g-p14_coco_three_tasks.py'
det_ckpt = (
    'work_dirs/visft_stage1-det_eva-g-p14_detr_8xb1-150k_coco/iter_150000.pth'  # noqa: E501
)
seg_ckpt = 'work_dirs/visft_stage1-seg_eva-g-p14_mask2former_8xb1-150k_coco/iter_150000.pth'  # noqa: E501
cap_ckpt = 'work_dirs/visft_stage1-cap_eva-g-p14_caption_8xb32-100k_coco/iter_100000.pth'  # noqa: E501
max_iters = 100000
warmup_iters = 2000
lr = 1e-5

model = dict(
    backbone=dict(
        _delete_=True,
        type='LoRA',
        module=dict(
            type='GradientCheckpointing',
            module={{_base_.model.backbone}},  # EVA-CLIP ViT-G/14
            pattern=r'layers\.\d+',
        ),
        # loralib's MergedLinear(r=64, lora_alpha=1, enable_lora=[True,
        # False, True]) on visual.blocks.{i}.attn.qkv, as ViSFT
        targets=[
            dict(pattern=r'layers\.\d+\.attn\.qkv', parts=[True, False, True])
        ],
        rank=64,
        alpha=1,
        dropout=0.0,
    ),
    tasks=dict(
        det=dict(
            init_cfg=dict(
                type='Pretrained', checkpoint=det_ckpt, prefix='heads.det.'
            )
        ),
        seg=dict(
            init_cfg=dict(
                type='Pretrained', checkpoint=seg_ckpt, prefix='heads.seg.'
            )
        ),
        caption=dict(
            init_cfg=dict(
                type='Pretrained',
                checkpoint=cap_ckpt,
                prefix='heads.caption.',
            )
        ),
    ),
    # Only the LoRA parameters train: `trainable` gives every other
    # parameter requires_grad=False. Backbone and heads are not listed as
    # frozen modules (`backbone=True`, `heads=True`) on purpose: frozen
    # modules run in eval mode, where GradientCheckpointing does nothing
    # (it checkpoints training forwards only; and mmdet's Deformable DETR,
    # the toy's det head, cannot compute its loss in eval mode). The whole
    # model runs in train mode, as in ViSFT's code: the ViT has no dropout
    # or drop path; the heads keep theirs (DETR 0.1, caption 0.1).
    freeze=dict(trainable=[r'\.lora_']),
)
# caption batches of 8 per GPU in stage 2 (32 in stage 1), as ViSFT
train_dataloader = dict(caption=dict(batch_size=8))
default_hooks = dict(
    visualization=dict(
        type='MultiTaskVisualizationHook',
        task_hooks=dict(
            det=dict(type='DetVisualizationHook'),
            seg=dict(type='DetVisualizationHook'),
        ),
    )
)

# FSDP2 (mmvfm/engine/model_wrappers/fsdp2.py): each ViT block one FSDP
# unit (full-name match: `backbone.layers.<i>`, not the blocks' inner
# `ffn.layers.*`), the rest (patch embedding, heads) the root unit; frozen
# and LoRA parameters share units. Full checkpoints (plain tensors, keys
# without a wrapper prefix) through FSDP2StateDictHook. fp32 throughout;
# mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32')
# halves the gathered weights (untried with the heads' deformable
# attention).
model_wrapper_cfg = dict(
    type='FSDP2Wrapper',
    shard_pattern=r'backbone\.layers\.\d+',
    reshard_after_forward=True,
)
custom_hooks = [dict(type='FSDP2StateDictHook')]

train_cfg = dict(
    max_iters=max_iters,
    val_interval=max_iters,
    task_ratios=dict(caption=0.4, seg=0.3, det=0.3),
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
