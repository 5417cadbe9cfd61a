# Copyright (c) mmvfm contributors. All rights reserved.
from .attribute_moe import AttributeMoEFFN
from .mask_dino_proposer import MaskDINOProposer, mask_losses
from .proposal_tokens import ProposalTokens, box_sine_encoding
from .region_proposer import RegionProposer, masks_to_boxes
from .task_agnostic_decoder import TaskAgnosticDecoder
from .uni_perceiver_v2 import GlobalTokens, UniPerceiverV2
from .unified_objective import UnifiedMLELoss

__all__ = [
    'AttributeMoEFFN',
    'GlobalTokens',
    'MaskDINOProposer',
    'ProposalTokens',
    'RegionProposer',
    'TaskAgnosticDecoder',
    'UniPerceiverV2',
    'UnifiedMLELoss',
    'box_sine_encoding',
    'mask_losses',
    'masks_to_boxes',
]
