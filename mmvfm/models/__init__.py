# Copyright (c) mmvfm contributors. All rights reserved.
from . import (  # noqa: F401
    clip,
    common,
    distillers,
    gqpos,
    language,
    losses,
    multi_task,
    necks,
    peft,
    sia,
    uniperceiver,
)
