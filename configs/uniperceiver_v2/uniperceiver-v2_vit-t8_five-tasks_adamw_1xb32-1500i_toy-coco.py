# The paper's ablation, the optimizer alone: the five-task model with
# UNMIXED sampling and retrieval gathered across ranks (as
# uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py) but plain AdamW
# instead of MT-AdamW (as the mixed-sampling baseline,
# uniperceiver-v2_vit-t8_five-tasks_mixed-adamw_1xb32-1500i_toy-coco.py).
# Run as a 2-process job, as the other two: tools/dist_train.sh CONFIG 2
_base_ = (
    './uniperceiver-v2_vit-t8_five-tasks_mixed-adamw_1xb32-1500i_toy-coco.py'
)

model = dict(
    tasks=dict(retrieval=dict(gather=True)),
    proposer=dict(sync_normalizers=True),
)
train_cfg = dict(strategy='unmixed')
# logging only (it reads the parameters; added after the published runs,
# whose numbers it does not change): each step's update RMS / lr, as the
# MT-AdamW 'decay' arm logs it, to set that arm's matched lr
custom_hooks = [
    dict(
        type='UpdateSizeHook',
        sets=dict(
            shared=r'^(backbone|decoder|text_encoder|image_proj|text_proj|'
            r'global_tokens)\.',
            proposal=r'^(proposer|proposal_tokens|sem_proj)\.',
        ),
    )
]
