_base_ = './fgd_fcos-r101-caffe_fcos-r50-caffe_fpn-gn_8xb2-24e_coco.py'
