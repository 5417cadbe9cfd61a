# Copyright (c) mmvfm contributors. All rights reserved.
from . import distillers, losses  # noqa: F401  (register into mmdet)
