# Copyright (c) mmvfm contributors. All rights reserved.


def register_all_modules(init_default_scope: bool = True) -> None:
    """Register mmdet's and mmvfm's modules into mmdet's registries.

    mmvfm registers into mmdet's registries (it has no registry of its own),
    so a stock mmdet config uses mmvfm's modules through ``custom_imports``
    and the default scope stays ``'mmdet'``.

    Args:
        init_default_scope (bool): whether to set the default scope to
            ``'mmdet'`` (delegated to mmdet's ``register_all_modules``).
    """
    from mmdet.utils import register_all_modules as register_mmdet_modules

    register_mmdet_modules(init_default_scope=init_default_scope)

    import mmvfm.datasets  # noqa: F401
    import mmvfm.engine  # noqa: F401
    import mmvfm.evaluation  # noqa: F401
    import mmvfm.models  # noqa: F401


def destroy_process_group() -> None:
    """Destroy the default process group, if one was initialised.

    mmengine's Runner leaves the process group to interpreter shutdown.
    With gloo (torch 2.13) that occasionally aborts a rank after a run
    that succeeded ("terminate called without an active exception":
    a backend thread destroyed while still joinable), so the tools tear
    the group down themselves once the run has finished.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
