# Short alias: bash tools/dist_train.sh configs/fgd/retinanet_r50.py 8
_base_ = './fgd_retinanet-x101-64x4d_retinanet-r50_fpn_8xb2-24e_coco.py'
