# Copyright (c) mmvfm contributors. All rights reserved.
from .recorder import ModuleOutputsRecorder, parse_source
from .single_teacher_distiller import SingleTeacherDistiller

__all__ = ['ModuleOutputsRecorder', 'SingleTeacherDistiller', 'parse_source']
