# Copyright (c) mmvfm contributors. All rights reserved.
"""What every GQPos detector adds to its mmdet parent: the ``gqpos``
module built from the config (None keeps the stock detector) and the
build-time check that the head has the box branch GQPos reuses."""

from typing import Optional, Sequence

from mmdet.utils import OptConfigType
from torch import nn

from .query_pos_guide import build_query_pos_guide


def check_head_has(
    head: nn.Module, names: Sequence[str], detector: str
) -> None:
    """Fail at build time if ``head`` lacks a branch GQPos reuses."""
    missing = [n for n in names if not hasattr(head, n)]
    if missing:
        raise TypeError(
            f"{detector} with gqpos reuses the head's box branch "
            f'{names}, but {type(head).__name__} has no {missing}'
        )


class GQPosMixin:
    """Mix in before the mmdet detector; call :meth:`init_gqpos` at the
    end of ``__init__`` (it needs ``embed_dims``, ``decoder`` and
    ``bbox_head``).

    Attributes:
        GQPOS_HEAD_BRANCHES (tuple[str]): the head's attributes the
            detector's ``gqpos_box`` uses.
    """

    GQPOS_HEAD_BRANCHES: Sequence[str] = ()
    gqpos: Optional[nn.Module]

    def init_gqpos(self, gqpos: OptConfigType) -> None:
        """Build ``self.gqpos`` (None: stock detector, no new weights)."""
        self.gqpos = build_query_pos_guide(
            gqpos, self.embed_dims, self.decoder.num_layers
        )
        if self.gqpos is not None:
            check_head_has(
                self.bbox_head, self.GQPOS_HEAD_BRANCHES, type(self).__name__
            )

    @property
    def with_gqpos(self) -> bool:
        return self.gqpos is not None
