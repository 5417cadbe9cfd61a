# Copyright (c) mmvfm contributors. All rights reserved.
"""All-gather with gradient, for contrastive losses across ranks.

mmengine's ``all_gather`` has no autograd: the gathered copies of the
other ranks' features are constants, so a contrastive loss computed
against them sends no gradient back to the ranks that produced them.
:func:`all_gather_with_grad` uses ``torch.distributed.nn``'s autograd
all-gather: in the backward pass the gradients of the gathered tensor are
summed over the ranks (all-reduce) and each rank keeps its own slice, so
``x.grad`` on rank r is the derivative of the *sum of every rank's loss*
with respect to rank r's rows -- what one process with the whole batch
computes. (Averaging over ranks, as DDP does for the parameters, then
gives the gradient of the mean loss.)

Without an initialised process group, or with one rank, it returns its
input. All ranks must give the same shape (checked first; a clear error
instead of a hang or a gloo size mismatch).
"""

import torch
import torch.distributed as dist
from torch import Tensor


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (N, ...) of every rank along dim 0, in rank order,
    keeping the autograd graph (module docstring).

    Returns:
        Tensor: (world_size * N, ...).

    Raises:
        ValueError: the ranks' shapes differ (each rank reports all shapes).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return x
    world = dist.get_world_size()
    if world == 1:
        return x
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            'all_gather_with_grad: every rank must give the same shape, got '
            f'{[tuple(s.tolist()) for s in shapes]} (ranks 0..{world - 1})'
        )
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)
