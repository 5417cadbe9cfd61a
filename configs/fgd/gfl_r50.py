_base_ = './fgd_gfl-r101_gfl-r50_fpn_8xb2-12e_coco.py'
