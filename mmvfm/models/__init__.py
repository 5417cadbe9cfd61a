# Copyright (c) mmvfm contributors. All rights reserved.
from . import distillers, gqpos, losses, multi_task, peft, sia  # noqa: F401
