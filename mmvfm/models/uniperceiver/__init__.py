# Copyright (c) mmvfm contributors. All rights reserved.
from .attribute_moe import AttributeMoEFFN
from .proposal_tokens import ProposalTokens, box_sine_encoding
from .region_proposer import RegionProposer, masks_to_boxes
from .task_agnostic_decoder import TaskAgnosticDecoder
from .uni_perceiver_v2 import GlobalTokens, UniPerceiverV2
from .unified_objective import UnifiedMLELoss

__all__ = [
    'AttributeMoEFFN',
    'GlobalTokens',
    'ProposalTokens',
    'RegionProposer',
    'TaskAgnosticDecoder',
    'UniPerceiverV2',
    'UnifiedMLELoss',
    'box_sine_encoding',
    'masks_to_boxes',
]
