# Copyright (c) mmvfm contributors. All rights reserved.
from .attribute_moe import AttributeMoEFFN
from .task_agnostic_decoder import TaskAgnosticDecoder
from .uni_perceiver_v2 import GlobalTokens, UniPerceiverV2
from .unified_objective import UnifiedMLELoss

__all__ = [
    'AttributeMoEFFN',
    'GlobalTokens',
    'TaskAgnosticDecoder',
    'UniPerceiverV2',
    'UnifiedMLELoss',
]
