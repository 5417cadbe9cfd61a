# Copyright (c) mmvfm contributors. All rights reserved.
"""The engine's modules live in mmdet's registries, as every other mmvfm
module does, and keep their names and old import paths."""

import warnings

import pytest
import torch.nn as nn
from mmdet import registry as mmdet_registry
from mmengine import registry as mmengine_registry
from mmengine.registry import DefaultScope

import mmvfm  # noqa: F401
from mmvfm.engine.hooks import FSDP2StateDictHook, TaskAwareOptimizerHook
from mmvfm.engine.model_wrappers import FSDP2Wrapper
from mmvfm.engine.optimizers import MTAdamW, MTAdamWOptimWrapper

ENGINE = [
    ('HOOKS', 'AtomicCheckpointHook'),
    ('HOOKS', 'FSDP2StateDictHook'),
    ('HOOKS', 'MultiTaskVisualizationHook'),
    ('HOOKS', 'TaskAwareOptimizerHook'),
    ('MODEL_WRAPPERS', 'FSDP2Wrapper'),
    ('OPTIMIZERS', 'MTAdamW'),
    ('OPTIM_WRAPPERS', 'MTAdamWOptimWrapper'),
    ('OPTIM_WRAPPER_CONSTRUCTORS', 'TrainableOptimWrapperConstructor'),
    ('LOOPS', 'MultiTaskIterBasedTrainLoop'),
    ('LOOPS', 'MultiTaskValLoop'),
    ('LOOPS', 'MultiTaskTestLoop'),
]


@pytest.mark.parametrize('registry, name', ENGINE)
def test_registered_in_mmdet(registry, name):
    assert name in getattr(mmdet_registry, registry).module_dict
    root = getattr(mmengine_registry, registry)
    # Runner.wrap_model looks the wrapper up in the root without the scope
    assert (name in root.module_dict) == (name == 'FSDP2Wrapper')
    # a config in mmdet's scope (every mmdet config, ours too) finds it by
    # its old name; any other scope by the scoped name
    # (the Runner's builds switch to the default scope's registry)
    with root.switch_scope_and_registry('mmdet') as scoped:
        assert scoped.get(name) is getattr(mmdet_registry, registry).get(name)
    assert root.get(f'mmdet.{name}') is not None


def test_build_through_mmengine_in_mmdet_scope():
    model = nn.Linear(2, 2)
    with DefaultScope.overwrite_default_scope('mmdet'):
        optim = mmengine_registry.OPTIMIZERS.build(
            dict(
                type='MTAdamW',
                params=model.parameters(),
                lr=1e-3,
                task_ratios=dict(a=0.5, b=0.5),
            )
        )
        wrapper = mmengine_registry.OPTIM_WRAPPERS.build(
            dict(type='MTAdamWOptimWrapper', optimizer=optim)
        )
        hook = mmengine_registry.HOOKS.build(dict(type='FSDP2StateDictHook'))
        task_hook = mmengine_registry.HOOKS.build(
            dict(type='TaskAwareOptimizerHook')
        )
    assert isinstance(optim, MTAdamW)
    assert isinstance(wrapper, MTAdamWOptimWrapper)
    assert isinstance(hook, FSDP2StateDictHook)
    assert isinstance(task_hook, TaskAwareOptimizerHook)
    assert mmengine_registry.MODEL_WRAPPERS.get('mmdet.FSDP2Wrapper') is (
        FSDP2Wrapper
    )


def test_old_import_paths_warn_and_work():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        from mmvfm.engine.model_wrappers import FSDP2StateDictHook as old_hook
        from mmvfm.models.utils import enable_gradient_checkpointing as old_gc
    from mmvfm.models.common import enable_gradient_checkpointing

    assert old_hook is FSDP2StateDictHook
    assert old_gc is enable_gradient_checkpointing
    messages = [str(w.message) for w in caught]
    assert any('moved to mmvfm.engine.hooks' in m for m in messages)
    assert any('moved to mmvfm.models.common' in m for m in messages)
    assert all(w.category is DeprecationWarning for w in caught)
