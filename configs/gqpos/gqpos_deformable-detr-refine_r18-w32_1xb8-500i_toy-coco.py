# GQPos on the toy Deformable DETR with box refinement.
_base_ = './deformable-detr-refine_r18-w32_1xb8-500i_toy-coco.py'
model = dict(
    type='GQPosDeformableDETR',
    # with box refinement the reference points already follow each layer's
    # box: the guided position goes to the self-attention only (on the toy
    # set 'both' lost 0.058 +- 0.003 bbox mAP to the stock detector over 3
    # seeds, 'self' 0.022 +- 0.006 over 6; see configs/gqpos/README.md)
    gqpos=dict(detach=True, shared_mlp=False, mode='add', attn='self'),
)
