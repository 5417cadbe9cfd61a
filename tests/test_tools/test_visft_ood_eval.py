# Copyright (c) mmvfm contributors. All rights reserved.
"""tools/analysis_tools/visft_ood_eval.py: the linear probe's recipe, the
paired statistics, attaching a tuned backbone (a LoRA release, a training
checkpoint with adapters, a merged export) and one real run on a tiny
out-of-domain toy set."""

import json
import os.path as osp
import re

import pytest
import torch
from conftest import REPO_ROOT, load_tool
from mmengine.config import Config

pytestmark = pytest.mark.usefixtures('one_thread')

CLIP = osp.join(
    REPO_ROOT, 'configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py'
)
STAGE2 = osp.join(
    REPO_ROOT,
    'configs/visft/visft_stage2_vit-t8_lora-r8_1xb8-300i_toy-coco.py',
)
QV = [dict(pattern=r'layers\.\d+\.attn\.qkv', parts=[True, False, True])]


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis_tools/visft_ood_eval.py')


def _encoder():
    from mmdet.registry import MODELS

    from mmvfm.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(CLIP)
    torch.manual_seed(0)
    return MODELS.build(cfg.model.image_encoder)


def _random_b(module, std=0.05):
    from mmvfm.models.peft import lora_layers

    torch.manual_seed(1)
    for _, layer in lora_layers(module):
        torch.nn.init.normal_(layer.lora_B, std=std)


# ------------------------------------------------------------ the recipe
def test_linear_probe_separates_and_is_deterministic(tool):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g, dtype=torch.float64) * 3
    y = torch.arange(90) % 3
    x = centers[y] + torch.randn(90, 8, generator=g, dtype=torch.float64)
    acc = tool.linear_probe(x[:60], y[:60], x[60:], y[60:], 3)
    assert acc == 100.0
    assert tool.linear_probe(x[:60], y[:60], x[60:], y[60:], 3) == acc
    # labels unrelated to the features: far from separable
    noise = torch.randn(90, 8, generator=g, dtype=torch.float64)
    low = tool.linear_probe(noise[:60], y[:60], noise[60:], y[60:], 3)
    assert low < 70.0


def test_paired_statistics_by_hand(tool):
    d = tool.paired(10.0, [11.0, 13.0, 12.0])
    assert d['diffs'] == [1.0, 3.0, 2.0]
    assert d['mean'] == pytest.approx(2.0)
    assert d['sd'] == pytest.approx(1.0)
    assert d['se'] == pytest.approx(1.0 / 3**0.5)
    one = tool.paired(1.0, [0.5])
    assert one['mean'] == -0.5 and one['sd'] is None and one['se'] is None


def test_metric_names(tool):
    short = tool._short(
        {
            'retrieval/retrieval/i2t_R@1': 3.0,
            'retrieval/retrieval/t2i_R@5': 4.0,
            'zero_shot/accuracy/top1': 20.0,
            'linear_probe/top1': 50.0,
            'retrieval/retrieval/i2t_R@10': 9.0,
        }
    )
    assert short == {
        'zero-shot top-1': 20.0,
        'i2t R@1': 3.0,
        't2i R@5': 4.0,
        'linear-probe top-1': 50.0,
    }


# ------------------------------------------------- attaching the tuned one
def test_lora_release_adapter_off_is_the_base(tool, tmp_path):
    from mmvfm.models.peft import apply_lora, save_lora, set_lora_enabled

    tuned = _encoder()
    apply_lora(tuned, QV, rank=4, alpha=4)
    _random_b(tuned)
    path = str(tmp_path / 'lora.pth')
    save_lora(tuned, path)

    base = _encoder()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = base(x)[-1]
        assert tool.attach_tuned(base, path) == 'adapter'
        tuned.eval()
        base.eval()
        assert torch.allclose(base(x)[-1], tuned(x)[-1], atol=1e-6)
        set_lora_enabled(base, False)
        assert torch.allclose(base(x)[-1], ref, atol=1e-6)
        set_lora_enabled(base, True)
        assert not torch.allclose(base(x)[-1], ref, atol=1e-4)


def _stage2_lora():
    """The stage-2 config's LoRA settings (rank, alpha, ...)."""
    lora = Config.fromfile(STAGE2).model.backbone
    assert lora.type == 'LoRA', 'the stage-2 backbone is no longer LoRA'
    return lora


def _stage2_checkpoint(tmp_path, encoder, corrupt=None, saved_cfg=None):
    """A training checkpoint as ViSFT stage 2 saves it: the adapted
    backbone under 'backbone.' (the stage-2 config's rank and alpha, q and
    v), a head, and (``saved_cfg``) the config text in ``meta['cfg']``."""
    from mmvfm.models.peft import apply_lora

    lora = _stage2_lora()
    apply_lora(encoder, QV, rank=lora.rank, alpha=lora.alpha)
    _random_b(encoder, std=1.0)
    state = {f'backbone.{k}': v for k, v in encoder.state_dict().items()}
    state['heads.det.weight'] = torch.zeros(2)
    if corrupt:
        state[f'backbone.{corrupt}'] = state[f'backbone.{corrupt}'] + 1
    path = str(tmp_path / 'iter_300.pth')
    meta = dict(iter=300)
    if saved_cfg is not None:
        meta['cfg'] = saved_cfg
    torch.save(dict(meta=meta, state_dict=state), path)
    return path


def _same_output(a, b):
    x = torch.randn(1, 3, 64, 64)
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.allclose(a(x)[-1], b(x)[-1], atol=1e-6)


def test_training_checkpoint_with_the_stage2_config(tool, tmp_path):
    from mmvfm.models.peft import lora_layers

    trained = _encoder()
    path = _stage2_checkpoint(tmp_path, trained)
    base = _encoder()
    with pytest.raises(ValueError, match='--tuned-config'):
        tool.attach_tuned(_encoder(), path)
    assert tool.attach_tuned(base, path, tuned_config=STAGE2) == 'adapter'
    layers = dict(lora_layers(base))
    assert len(layers) == 6
    for name, layer in layers.items():
        assert layer.rank == _stage2_lora().rank
        assert layer.parts == [True, False, True]
        assert torch.equal(
            layer.lora_B, dict(lora_layers(trained))[name].lora_B
        )
    assert _same_output(base, trained)


def test_training_checkpoint_reads_its_saved_config(tool, tmp_path):
    """mmengine saves the run's config in meta['cfg']: no --tuned-config
    needed, and one that disagrees with it is refused by field."""
    text = Config.fromfile(STAGE2).pretty_text
    trained = _encoder()
    path = _stage2_checkpoint(tmp_path, trained, saved_cfg=text)
    base = _encoder()
    assert tool.attach_tuned(base, path) == 'adapter'
    assert _same_output(base, trained)
    other = str(tmp_path / 'other.py')
    alpha = _stage2_lora().alpha
    with open(other, 'w') as f:
        f.write(text.replace(f'alpha={alpha}', f'alpha={alpha * 2}'))
    with pytest.raises(ValueError, match="LoRA 'alpha' is"):
        tool.attach_tuned(_encoder(), path, tuned_config=other)


def test_adapters_from_another_base_are_refused(tool, tmp_path):
    path = _stage2_checkpoint(
        tmp_path, _encoder(), corrupt='layers.2.ffn.layers.1.weight'
    )
    with pytest.raises(ValueError, match=r'layers\.2\.ffn\.layers\.1\.weight'):
        tool.attach_tuned(_encoder(), path, tuned_config=STAGE2)


def test_wrong_prefix_names_the_prefixes(tool, tmp_path):
    path = _stage2_checkpoint(tmp_path, _encoder())
    with pytest.raises(KeyError, match=re.escape("'backbone.', 'heads.'")):
        tool.attach_tuned(_encoder(), path, prefix='encoder.')


def test_merged_export_replaces_the_weights(tool, tmp_path):
    from mmvfm.models.peft import apply_lora, merged_state_dict

    tuned = _encoder()
    apply_lora(tuned, QV, rank=4, alpha=4)
    _random_b(tuned)
    path = str(tmp_path / 'merged.pth')
    state = {f'backbone.{k}': v for k, v in merged_state_dict(tuned).items()}
    torch.save(dict(state_dict=state), path)
    base = _encoder()
    assert tool.attach_tuned(base, path) == 'weights'
    x = torch.randn(1, 3, 64, 64)
    base.eval()
    tuned.eval()
    with torch.no_grad():
        assert torch.allclose(base(x)[-1], tuned(x)[-1], atol=1e-5)


# ------------------------------------------------------------- a real run
@pytest.fixture(scope='module')
def ood_root(tmp_path_factory):
    from mmvfm.datasets import generate_toy_coco

    root = str(tmp_path_factory.mktemp('toy_ood'))
    generate_toy_coco(
        root,
        num_train=20,
        num_val=10,
        img_size=(48, 64),
        num_captions=2,
        seed=0,
        domain='ood',
        overwrite=True,
    )
    return root


def test_real_run_base_vs_two_releases(tool, ood_root, tmp_path):
    from mmdet.registry import MODELS

    from mmvfm.models.language import coco_captions, train_bpe
    from mmvfm.models.peft import apply_lora, save_lora

    tokenizer = str(tmp_path / 'tokenizer.json')
    train_bpe(
        coco_captions(osp.join(ood_root, 'annotations/captions_train.json')),
        tokenizer,
        vocab_size=512,
    )
    cfg = Config.fromfile(CLIP)
    cfg.model.tokenizer.file = tokenizer
    torch.manual_seed(0)
    clip = MODELS.build(cfg.model)
    ckpt = str(tmp_path / 'clip.pth')
    torch.save(dict(state_dict=clip.state_dict()), ckpt)
    releases = []
    for seed in (0, 1):
        apply_lora(clip.image_encoder, QV, rank=4, alpha=4)
        torch.manual_seed(seed)
        _random_b(clip.image_encoder, std=0.2)
        (tmp_path / f's{seed}').mkdir()
        releases.append(str(tmp_path / f's{seed}' / 'lora.pth'))
        save_lora(clip.image_encoder, releases[-1])
        clip = MODELS.build(cfg.model)
    work = str(tmp_path / 'ood')
    result = tool.main(
        [
            CLIP,
            ckpt,
            '--tuned',
            *releases,
            '--data-root',
            ood_root,
            '--work-dir',
            work,
            '--cfg-options',
            f'model.tokenizer.file={tokenizer}',
            'test_dataloader.retrieval.batch_size=4',
        ]
    )
    metrics = set(result['base'])
    assert metrics == {
        'zero-shot top-1',
        'i2t R@1',
        'i2t R@5',
        't2i R@1',
        't2i R@5',
        'retrieval R_mean',
        'linear-probe top-1',
    }
    assert result['modes'] == ['adapter', 'adapter']
    for name in metrics:
        d = result['paired'][name]
        tuned = [t[name] for t in result['tuned_metrics']]
        assert d['diffs'] == pytest.approx(
            [t - result['base'][name] for t in tuned]
        )
    with open(osp.join(work, 'ood_eval.json')) as f:
        assert json.load(f)['base'] == result['base']
    table = open(osp.join(work, 'ood_eval.md')).read()
    assert table.count('\n') == 2 + len(metrics)
    assert '| s0 | s1 |' in table
    assert osp.getsize(osp.join(work, 'ood_eval.png')) > 1000


def test_missing_ood_files_name_the_generator(tool, tmp_path):
    with pytest.raises(FileNotFoundError, match='--domain ood'):
        tool.main(
            [
                CLIP,
                'x.pth',
                '--tuned',
                'y.pth',
                '--data-root',
                str(tmp_path),
            ]
        )
