# Copyright (c) mmvfm contributors. All rights reserved.
"""configs/clip through the Runner on the tiny toy set (2 iterations, 2
ViT blocks): it trains, validates retrieval and zero-shot classification
in one loop, tools/test.py evaluates its checkpoint, and that checkpoint's
ViT loads into the ViT trunk of configs/vit_trunk with
``prefix='image_encoder.'`` (its 8 x 8 position embedding interpolated to
the trunk's 16 x 16)."""

import copy
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, load_tool, shrink_toy_run
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner

from mmvfm.models.language import coco_captions, train_bpe

pytestmark = pytest.mark.usefixtures('one_thread')
CONFIG = 'configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py'
TRUNK = 'configs/vit_trunk/vit-t8_sfp_deformable-detr_1xb8-500i_toy-coco.py'


@pytest.fixture(scope='module')
def clip_run(toy_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('clip_run')
    cfg = Config.fromfile(osp.join(REPO_ROOT, CONFIG))
    shrink_toy_run(cfg, toy_root, str(tmp / 'train'), 'clip_run', 2, 4)
    tokenizer = str(tmp / 'bpe.json')
    captions = coco_captions(f'{toy_root}/annotations/captions_train.json')
    train_bpe(captions, tokenizer, vocab_size=cfg.vocab_size)
    cfg.merge_from_dict(
        {
            'model.tokenizer.file': tokenizer,
            'model.image_encoder.arch.num_layers': 2,
            'randomness.seed': 0,
        }
    )
    runner = Runner.from_cfg(cfg)
    runner.train()
    return cfg, runner, str(tmp)


def test_trains_and_validates_both_tasks(clip_run):
    cfg, runner, tmp = clip_run
    scalars = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
    for key in (
        'retrieval/retrieval/i2t_R@1',
        'retrieval/retrieval/t2i_R@1',
        'retrieval/retrieval/R_mean',
        'zero_shot/accuracy/top1',
    ):
        assert 0.0 <= scalars[f'val/{key}'].current() <= 100.0, key
    cfg_path = osp.join(tmp, 'cfg.py')
    cfg.dump(cfg_path)
    metrics = load_tool('test.py').main(
        [
            cfg_path,
            osp.join(cfg.work_dir, 'iter_2.pth'),
            '--work-dir',
            osp.join(tmp, 'test'),
            '--cfg-options',
            'experiment_name=clip_run_test',
        ]
    )
    if metrics is not None:  # tools/test.py returns the metrics
        assert 'zero_shot/accuracy/top1' in metrics


def test_its_vit_loads_into_the_vit_trunk(clip_run):
    cfg, _, _ = clip_run
    ckpt = osp.join(cfg.work_dir, 'iter_2.pth')
    trunk = Config.fromfile(osp.join(REPO_ROOT, TRUNK))
    trunk.model.backbone.arch.num_layers = 2
    trunk.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=ckpt, prefix='image_encoder.'
    )
    model = MODELS.build(copy.deepcopy(trunk.model))
    model.init_weights()
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    clip = state['state_dict']
    vit = model.backbone
    for key in ('layers.1.attn.qkv.weight', 'patch_embed.projection.weight'):
        torch.testing.assert_close(
            vit.state_dict()[key], clip[f'image_encoder.{key}']
        )
    # CLIP ran at 64 px (8 x 8 patches), the trunk at 128 px (16 x 16)
    assert clip['image_encoder.pos_embed'].shape[1] == 64
    assert vit.pos_embed.shape[1] == 256
    # a wrong prefix is named at build time
    trunk.model.backbone.init_cfg['prefix'] = 'backbone.'
    msg = "prefix 'backbone.'; its keys start with .*'image_encoder.'"
    with pytest.raises(ValueError, match=msg):
        MODELS.build(copy.deepcopy(trunk.model)).init_weights()
