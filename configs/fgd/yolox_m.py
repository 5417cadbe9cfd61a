_base_ = './fgd_yolox-l_yolox-m_8xb2-300e_coco.py'
