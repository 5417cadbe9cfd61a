# Copyright (c) mmvfm contributors. All rights reserved.
"""A Pretrained init_cfg in a MultiTaskModel: a matching checkpoint loads
(with a prefix, LoRA keys allowed missing); a mismatching one is refused
naming the first missing / unexpected keys (mmengine alone only logs)."""

import copy

import pytest
import torch
from conftest import TINY_VIT as VIT
from mmdet.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')


def _save(tmp_path, state, name='ckpt.pth'):
    path = str(tmp_path / name)
    torch.save({'state_dict': state}, path)
    return path


def _model(init_cfg, lora=False):
    backbone = dict(copy.deepcopy(VIT), init_cfg=init_cfg)
    if lora:
        backbone = dict(
            type='LoRA',
            module=backbone,
            targets=[dict(pattern=r'layers\.\d+\.attn\.qkv')],
        )
    return MODELS.build(
        dict(
            type='MultiTaskModel',
            backbone=backbone,
            tasks=dict(
                cls=dict(
                    type='ClsTaskHead',
                    head=dict(
                        type='mmpretrain.VisionTransformerClsHead',
                        num_classes=3,
                        in_channels=32,
                    ),
                )
            ),
        )
    )


def test_matching_checkpoint_loads_with_prefix_and_lora(tmp_path):
    torch.manual_seed(0)
    source = MODELS.build(copy.deepcopy(VIT)).state_dict()
    state = {f'backbone.{k}': v for k, v in source.items()}
    state['head.fc.weight'] = torch.zeros(3)  # outside the prefix
    path = _save(tmp_path, state)
    model = _model(
        dict(type='Pretrained', checkpoint=path, prefix='backbone.'),
        lora=True,
    )
    model.init_weights()
    for k, v in source.items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v)


def test_mismatch_names_the_keys(tmp_path):
    source = MODELS.build(copy.deepcopy(VIT)).state_dict()
    wrong = dict(source)
    wrong.pop('layers.1.ln2.weight')
    wrong['blocks.0.norm1.weight'] = torch.zeros(32)
    model = _model(dict(type='Pretrained', checkpoint=_save(tmp_path, wrong)))
    with pytest.raises(
        ValueError,
        match=r"backbone.init_cfg: .* 1 missing keys \['layers.1.ln2.weight'"
        r"\], 1 unexpected keys \['blocks.0.norm1.weight'\]",
    ):
        model.init_weights()
    # keys under a prefix but no prefix given: all missing and unexpected
    prefixed = {f'backbone.{k}': v for k, v in source.items()}
    model = _model(
        dict(type='Pretrained', checkpoint=_save(tmp_path, prefixed, 'p.pth'))
    )
    with pytest.raises(ValueError, match='a wrong prefix'):
        model.init_weights()
