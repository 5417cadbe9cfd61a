# The ablation's MT-AdamW arm (uniperceiver-v2_vit-t8_five-tasks_1xb32-
# 1500i_toy-coco.py: unmixed + retrieval gathered + MT-AdamW) with MT-AdamW's
# open choice made the other way: a parameter without a gradient in a step
# (another task's head, the proposal stage in a classification step) keeps
# its value while its moments decay as for a zero gradient and its step count
# advances (untouched='decay'), and bias correction is on. Without both, a
# parameter only some tasks touch steps ~1/sqrt(s_k) larger and the first
# ~1000 steps larger still (README: "The open choice of MT-AdamW").
# UpdateSizeHook logs each step's update RMS / lr of the parameters every
# task shares and of the proposal stage (train/update_rms/{shared,proposal}).
# Run as a 2-process job, as the other arms: tools/dist_train.sh CONFIG 2
_base_ = './uniperceiver-v2_vit-t8_five-tasks_1xb32-1500i_toy-coco.py'

optim_wrapper = dict(optimizer=dict(untouched='decay', bias_correction=True))
update_size_sets = dict(
    shared=r'^(backbone|decoder|text_encoder|image_proj|text_proj|'
    r'global_tokens)\.',
    proposal=r'^(proposer|proposal_tokens|sem_proj)\.',
)
custom_hooks = [
    dict(type='TaskAwareOptimizerHook'),
    dict(type='UpdateSizeHook', sets=update_size_sets),
]
