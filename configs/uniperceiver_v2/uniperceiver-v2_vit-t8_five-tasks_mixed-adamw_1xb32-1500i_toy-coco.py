# The paper's ablation baseline on the toy set: the five-task model with
# MIXED sampling (each rank draws its own task every iteration) and plain
# AdamW, against uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py
# (unmixed + retrieval gathered across ranks + MT-AdamW). The two differ
# only with more than one rank: run both as 2-process jobs,
#   tools/dist_train.sh CONFIG 2
# With mixed sampling the ranks train different heads in one iteration, so
# retrieval cannot gather its candidates across them (the multi-task loop
# refuses a collective head under 'mixed'): each rank's own batch only.
_base_ = './uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py'

# The same holds for the proposal stage's loss normalisers (Mask2Former
# averages its mask count over the ranks): each rank uses its own.
model = dict(
    tasks=dict(retrieval=dict(gather=False)),
    proposer=dict(sync_normalizers=False),
)
train_cfg = dict(strategy='mixed')
# AdamW's usual betas (MT-AdamW's 0.1 / 0.001 in its own convention), the
# same lr, weight decay and parameter groups
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05
    ),
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}},
)
custom_hooks = []
