_base_ = './fgd_cascade-mask-rcnn-x101-32x4d-dconv_mask-rcnn-r50_fpn_8xb2-24e_coco.py'  # noqa: E501
