# Copyright (c) mmvfm contributors. All rights reserved.
from .attribute_moe import AttributeMoEFFN
from .global_tokens import GlobalTokens
from .mask_dino_proposer import MaskDINOProposer, mask_losses
from .proposal_tokens import ProposalTokens, box_sine_encoding
from .region_proposer import RegionProposer, masks_to_boxes
from .task_agnostic_decoder import TaskAgnosticDecoder
from .task_cfg import UNIPERCEIVER_TASKS
from .tasks import UniPerceiverTask
from .uni_perceiver_v2 import UniPerceiverV2
from .unified_objective import UnifiedMLELoss

__all__ = [
    'AttributeMoEFFN',
    'GlobalTokens',
    'MaskDINOProposer',
    'ProposalTokens',
    'RegionProposer',
    'TaskAgnosticDecoder',
    'UNIPERCEIVER_TASKS',
    'UniPerceiverTask',
    'UniPerceiverV2',
    'UnifiedMLELoss',
    'box_sine_encoding',
    'mask_losses',
    'masks_to_boxes',
]
