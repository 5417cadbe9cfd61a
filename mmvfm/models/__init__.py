# Copyright (c) mmvfm contributors. All rights reserved.
from . import distillers, losses, multi_task  # noqa: F401  (register)
