# Copyright (c) mmvfm contributors. All rights reserved.
from . import (  # noqa: F401
    distillers,
    gqpos,
    losses,
    multi_task,
    necks,
    peft,
    sia,
    utils,
)
