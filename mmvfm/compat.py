# Copyright (c) mmvfm contributors. All rights reserved.
"""Fixes for known incompatibilities of the pinned OpenMMLab stack.

Every work-around for the stack lives in this one module and is applied by
:func:`apply_compat` when :mod:`mmvfm` is imported. Our tools import mmvfm
before anything else; stock mmdet tools reach it through
``custom_imports=dict(imports=['mmvfm'])``, which mmengine runs while it
loads the config, i.e. before mmdet builds a model or a dataset.

Each fix is guarded so that it only acts where the problem exists (a CUDA
torch with a working torchvision is left alone) and is idempotent.

The stack these were measured on: torch 2.13.0+cpu, torchvision 0.28.0,
mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0, mmpretrain 1.2.0.
"""

import contextlib
import functools
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pickle
import sys
import warnings
from typing import Callable, Iterator, List

import torch

_APPLIED: List[str] = []


# --------------------------------------------------------------------------
# 1. torchvision beside a torch it was not compiled for.
# PyPI's torchvision 0.28.0 is built against the CUDA torch 2.13.0; beside
# the CPU build its compiled extension ``_C`` fails to load and the import
# of ``torchvision`` itself dies in ``_meta_registrations`` with
# ``RuntimeError: operator torchvision::nms does not exist``. That is not an
# ImportError, so every ``try: import torchvision`` guard (mmpretrain's
# metrics, hence ``import mmdet.models``) breaks too. Declaring the two op
# schemas that ``_meta_registrations`` attaches fake kernels to lets the
# pure-Python parts of torchvision import. ``torchvision.ops.nms`` stays
# unusable (no kernel); mmcv.ops provides nms for mmdet.
# --------------------------------------------------------------------------
_TORCHVISION_SCHEMAS = {
    'nms': 'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms': 'qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
}
_torchvision_lib = None  # keeps the schema registrations alive


def _op_schema_exists(qualname: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, '')
    except RuntimeError:
        return False
    return True


def _torchvision_extension_loads() -> bool:
    """Try to load torchvision's compiled ops the way torchvision does.

    Returns True if the extension loaded (then torchvision registers its own
    ops and must not be touched), False if it is missing or incompatible.
    """
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            for path in glob.glob(os.path.join(folder, '_C' + suffix)):
                try:
                    torch.ops.load_library(path)
                    return True
                except (ImportError, OSError):
                    return False
    return False


def fix_torchvision_ops() -> bool:
    """Declare ``torchvision::{nms,qnms}`` if torchvision cannot load its ops.

    Returns:
        bool: whether the schemas were declared by this call.
    """
    global _torchvision_lib
    if 'torchvision' in sys.modules or _torchvision_lib is not None:
        return False
    if importlib.util.find_spec('torchvision') is None:
        return False
    if _op_schema_exists('torchvision::nms'):
        return False
    if _torchvision_extension_loads():
        return False
    lib = torch.library.Library('torchvision', 'FRAGMENT')
    for name, schema in _TORCHVISION_SCHEMAS.items():
        if not _op_schema_exists(f'torchvision::{name}'):
            lib.define(schema)
    _torchvision_lib = lib
    return True


# --------------------------------------------------------------------------
# 2. mmpretrain 1.2.0 and transformers >= 4.56.
# mmpretrain imports its BLIP/BLIP-2/OFA/... models whenever transformers
# >= 4.28 is installed (``WITH_MULTIMODAL``). With transformers >= 4.56
# those modules raise TypeError on import, which breaks
# ``import mmpretrain.models`` and through mmpretrain's metrics
# ``import mmdet.models``. We switch mmpretrain's multimodal flag off in that
# case only: mmpretrain then registers placeholders for those models.
# --------------------------------------------------------------------------
_BROKEN_TRANSFORMERS = (4, 56)


def _transformers_version() -> tuple:
    from importlib import metadata

    try:
        version = metadata.version('transformers')
    except metadata.PackageNotFoundError:
        return ()
    parts = []
    for part in version.split('.')[:2]:
        digits = ''.join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _MultimodalSwitchOff(importlib.abc.MetaPathFinder):
    """Post-import hook: sets ``WITH_MULTIMODAL = False`` right after
    ``mmpretrain.utils.dependency`` executes, before any module reads it."""

    target = 'mmpretrain.utils.dependency'

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_switch_off(module):
            exec_module(module)
            module.WITH_MULTIMODAL = False

        spec.loader.exec_module = exec_and_switch_off
        return spec


def fix_mmpretrain_multimodal() -> bool:
    """Turn mmpretrain's multimodal imports off beside transformers>=4.56.

    Returns:
        bool: whether the switch was (or will be) turned off.
    """
    version = _transformers_version()
    if not version or version < _BROKEN_TRANSFORMERS:
        return False
    module = sys.modules.get(_MultimodalSwitchOff.target)
    if module is not None:
        if 'mmpretrain.models' in sys.modules and module.WITH_MULTIMODAL:
            warnings.warn(
                'mmpretrain.models was imported before mmvfm: '
                'its multimodal models may fail to import with '
                'transformers>=4.56. Import mmvfm first.',
                stacklevel=2,
            )
        module.WITH_MULTIMODAL = False
        return True
    if not any(isinstance(f, _MultimodalSwitchOff) for f in sys.meta_path):
        sys.meta_path.insert(0, _MultimodalSwitchOff())
    return True


# --------------------------------------------------------------------------
# 3. torch >= 2.6 loads checkpoints with ``weights_only=True``.
# mmengine checkpoints carry its message hub (``HistoryBuffer`` holding numpy
# arrays) and numpy scalars in ``meta``; ``load_from``, ``--resume`` and
# ``tools/test.py`` then fail with ``Unsupported global:
# mmengine.logging.history_buffer.HistoryBuffer``. We allow-list exactly the
# classes mmengine stores instead of turning weights-only loading off, so a
# checkpoint from the internet still cannot run code.
# A HistoryBuffer pickles its statistics methods (``HistoryBuffer.mean``,
# ...) with protocol 2 as ``getattr(HistoryBuffer, 'mean')``. The builtin
# ``getattr`` is NOT allow-listed (it would reach any attribute of any
# allowed object); the pickled name is mapped to
# :func:`_history_buffer_getattr`, which resolves only those methods.
# --------------------------------------------------------------------------
def _history_buffer_getattr(obj, name: str):
    """``getattr`` restricted to the public methods of HistoryBuffer."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if (
        obj is HistoryBuffer
        and not name.startswith('_')
        and callable(HistoryBuffer.__dict__.get(name))
    ):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights-only load refused getattr({obj!r}, {name!r}): mmvfm only '
        "allows the statistics methods of mmengine's HistoryBuffer"
    )


def _checkpoint_safe_globals() -> list:
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(t))
        for t in (
            np.bool_,
            np.int8,
            np.int16,
            np.int32,
            np.int64,
            np.uint8,
            np.float16,
            np.float32,
            np.float64,
        )
    ]
    getattr_names = [
        (_history_buffer_getattr, f'{module}.getattr')
        for module in ('builtins', '__builtin__')
    ]
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        _reconstruct,
        scalar,
        *dtype_classes,
        *getattr_names,
    ]


def fix_checkpoint_loading() -> bool:
    """Allow-list mmengine's checkpoint classes for weights-only loading."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:  # torch < 2.4 does not restrict globals
        return False
    add_safe_globals(_checkpoint_safe_globals())
    return True


def fix_checkpoint_urls() -> bool:
    """Load every checkpoint mmengine resolves weights-only.

    mmengine's loaders for ``http(s)://``, ``torchvision://``,
    ``open-mmlab://`` and ``mmcls://`` go through
    ``torch.hub.load_state_dict_from_url`` (``weights_only=False``), so a
    poisoned file in the hub cache ran its code. Every scheme is
    re-registered with :mod:`mmvfm.fileio`'s loaders, whose errors also
    name the file (torch's suggest ``weights_only=False``).
    """
    from mmvfm.fileio import register_safe_checkpoint_loaders

    return register_safe_checkpoint_loaders()


def fix_last_checkpoint() -> bool:
    """``--resume`` with an empty or stale ``last_checkpoint``: an error
    naming the file and the folder's checkpoints (mmengine's was
    ``FileNotFoundError:  can not be found.``)."""
    import mmengine.runner as runner_pkg
    from mmengine.runner import checkpoint, runner

    from mmvfm.fileio import find_latest_checkpoint

    modules = [checkpoint, runner, runner_pkg]
    try:
        from mmengine.runner import _flexible_runner

        modules.append(_flexible_runner)
    except ImportError:  # pragma: no cover - older mmengine
        pass
    changed = False
    for module in modules:
        if getattr(module, 'find_latest_checkpoint', None) is not (
            find_latest_checkpoint
        ):
            module.find_latest_checkpoint = find_latest_checkpoint
            changed = True
    return changed


# --------------------------------------------------------------------------
# 4. Distributed training on a machine without CUDA.
# mmengine 0.10.7 calls ``torch.cuda.set_device(local_rank)`` in every
# launcher (AttributeError on a CPU build of torch, an error on a GPU-less
# machine), mmdet's configs ask for the nccl backend (CUDA only), and the
# Runner wraps the model in ``MMDistributedDataParallel(device_ids=[rank])``,
# which torch refuses for a module on the CPU. Without CUDA we make
# ``set_device`` a no-op during process-group initialisation, use gloo, and
# drop ``device_ids`` for CPU modules. With CUDA nothing changes.
# --------------------------------------------------------------------------
@contextlib.contextmanager
def _no_cuda_set_device() -> Iterator[None]:
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_launcher(launch: Callable) -> Callable:

    @functools.wraps(launch)
    def launch_on_cpu(backend, *args, **kwargs):
        if torch.cuda.is_available():
            return launch(backend, *args, **kwargs)
        if backend != 'gloo':
            warnings.warn(
                f'CUDA is not available: using the gloo backend '
                f'instead of {backend!r} for torch.distributed.',
                stacklevel=2,
            )
            backend = 'gloo'
        with _no_cuda_set_device():
            return launch(backend, *args, **kwargs)

    launch_on_cpu._mmvfm_cpu = True
    return launch_on_cpu


def _cpu_ddp_init(init: Callable) -> Callable:

    @functools.wraps(init)
    def init_without_device_ids(self, module, *args, **kwargs):
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        return init(self, module, *args, **kwargs)

    init_without_device_ids._mmvfm_cpu = True
    return init_without_device_ids


def fix_cpu_distributed() -> bool:
    """Make mmengine's launchers and DDP wrapper work without CUDA."""
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import distributed as ddp_module

    changed = False
    for name in ('_init_dist_pytorch', '_init_dist_slurm', '_init_dist_mpi'):
        launch = getattr(dist_utils, name)
        if not getattr(launch, '_mmvfm_cpu', False):
            setattr(dist_utils, name, _cpu_launcher(launch))
            changed = True
    ddp_cls = ddp_module.MMDistributedDataParallel
    if not getattr(ddp_cls.__init__, '_mmvfm_cpu', False):
        ddp_cls.__init__ = _cpu_ddp_init(ddp_cls.__init__)
        changed = True
    return changed


# --------------------------------------------------------------------------
# 5. mmcv's multi-scale deformable attention on the CPU.
# mmcv 2.1 has a CUDA kernel only: ``MultiScaleDeformableAttention`` runs
# ``multi_scale_deformable_attn_pytorch`` (grid_sample) for CPU tensors,
# ~10x slower than mmvfm's C++ kernel (benchmarks/ms_deform_attn.py). Where
# mmvfm's ops are built, the module's CPU path calls the kernel instead --
# Deformable DETR, DINO and GQPos-Deformable in stock mmdet configs too.
# ``MMVFM_CPU_MSDA=0`` in the environment switches it off (read at each
# call). The original function stays importable as
# ``dispatch.original`` / :func:`mmcv_msda_pytorch`.
# --------------------------------------------------------------------------
CPU_MSDA_ENV = 'MMVFM_CPU_MSDA'


def cpu_msda_enabled() -> bool:
    """Whether mmcv's CPU path uses mmvfm's kernel (``MMVFM_CPU_MSDA``,
    default on)."""
    return os.environ.get(CPU_MSDA_ENV, '1') != '0'


def mmcv_msda_pytorch() -> Callable:
    """mmcv's own ``multi_scale_deformable_attn_pytorch`` (the oracle),
    whether or not the dispatch is installed."""
    from mmcv.ops import multi_scale_deform_attn as msda

    fn = msda.multi_scale_deformable_attn_pytorch
    return getattr(fn, 'original', fn)


def fix_ms_deform_attn_cpu() -> bool:
    """Route mmcv's CPU multi-scale deformable attention to mmvfm's kernel
    where it is built."""
    try:
        from mmcv.ops import multi_scale_deform_attn as msda
    except ImportError:  # mmcv without ops
        return False
    from mmvfm.ops.ms_deform_attn import ext_available, ms_deform_attn

    current = msda.multi_scale_deformable_attn_pytorch
    if getattr(current, '_mmvfm', False):
        return True
    if not ext_available():
        return False

    @functools.wraps(current)
    def dispatch(
        value, value_spatial_shapes, sampling_locations, attention_weights
    ):
        if value.device.type == 'cpu' and cpu_msda_enabled():
            return ms_deform_attn(
                value,
                value_spatial_shapes,
                sampling_locations,
                attention_weights,
            )
        return current(
            value, value_spatial_shapes, sampling_locations, attention_weights
        )

    dispatch._mmvfm = True
    dispatch.original = current
    msda.multi_scale_deformable_attn_pytorch = dispatch
    return True


def apply_compat() -> List[str]:
    """Apply every fix of this module once; return the names applied."""
    for fix in (
        fix_torchvision_ops,
        fix_mmpretrain_multimodal,
        fix_checkpoint_loading,
        fix_checkpoint_urls,
        fix_last_checkpoint,
        fix_cpu_distributed,
        fix_ms_deform_attn_cpu,
    ):
        if fix() and fix.__name__ not in _APPLIED:
            _APPLIED.append(fix.__name__)
    return list(_APPLIED)
