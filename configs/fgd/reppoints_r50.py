_base_ = './fgd_reppoints-moment-x101-dconv_reppoints-moment-r50_fpn-gn_8xb2-24e_coco.py'  # noqa: E501
