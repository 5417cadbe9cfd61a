# Copyright (c) mmvfm contributors. All rights reserved.
from .clip_model import CLIP
from .prompts import DEFAULT_TEMPLATES, check_templates, class_prompts

__all__ = ['CLIP', 'DEFAULT_TEMPLATES', 'check_templates', 'class_prompts']
