# Copyright (c) mmvfm contributors. All rights reserved.
"""Out-of-domain evaluation of a ViSFT-tuned backbone, base vs tuned.

ViSFT's claim: tuning a foundation model's vision backbone on in-domain
detection, segmentation and captioning (LoRA only) improves it on tasks and
domains it was never tuned on. This tool puts the base backbone and the
tuned one side by side, through the foundation model's own text side, on a
data root the tuning never saw (the toy set of
``generate_toy_coco.py --domain ood``, or any set in its formats):

- **zero-shot classification**: top-1 of the CLIP model's prompt-ensemble
  classifier (its config's ``zero_shot`` classes and templates) on
  ``annotations/classification_val.json``;
- **image-text retrieval**: R@1/5/10 both ways on
  ``annotations/captions_val.json``;
- **linear probe** (the fixed recipe of :func:`linear_probe`): a softmax
  regression on the mean-pooled last map of the image encoder (before the
  CLIP projection), trained on ``classification_train.json``, top-1 on
  ``classification_val.json``.

Zero-shot and retrieval run the CLIP config's own test loop
(``MultiTaskTestLoop``, ``RetrievalMetric`` and mmpretrain's ``Accuracy``)
with every test dataset's ``data_root`` pointed at ``--data-root`` (the
tokenizer stays the config's).

Base and tuned:

- the base is the CLIP config's image encoder with ``CLIP_CHECKPOINT``;
- each ``--tuned`` file is either an mmvfm LoRA release
  (:func:`mmvfm.models.peft.save_lora`) or a training checkpoint (a ViSFT
  stage-2 run's ``iter_*.pth``) whose ``--prefix`` keys (``backbone.``)
  hold the backbone. With adapters (``lora_A`` / ``lora_B``), the same
  encoder is evaluated with them disabled (base) and enabled (tuned); the
  adapters' rank, alpha and parts come from the release, or for a
  training checkpoint from the config it saved (mmengine's ``meta['cfg']``)
  and/or ``--tuned-config`` (the stage-2 config's ``type='LoRA'``
  backbone; both present: they must agree), and its frozen weights must
  equal the base encoder's
  (else the adapters were tuned on another base: an error names the key;
  the position embedding may differ in size). Without adapters (a merged
  export, another fine-tuned backbone) the file's backbone replaces the
  encoder's weights (position embedding resized by mmpretrain's ViT).

Several ``--tuned`` files (e.g. the stage-2 seeds) give one column each and
the paired differences tuned - base with their mean, sd and standard error.
Writes ``ood_eval.json``, ``ood_eval.md`` and ``ood_eval.png`` (base vs
tuned per metric, one dot per file) into ``--work-dir``.

Example (configs/visft/README.md)::

    python tools/analysis_tools/visft_ood_eval.py \\
        configs/clip/clip_vit-t8_text-w128_1xb32-500i_toy-coco.py \\
        work_dirs/clip_vit-t8_text-w128_1xb32-500i_toy-coco/iter_500.pth \\
        --tuned work_dirs/visft_stage2/*/iter_300.pth \\
        --tuned-config \\
        configs/visft/visft_stage2_vit-t8_lora-r8_1xb8-300i_toy-coco.py \\
        --data-root data/toy_coco_ood --work-dir work_dirs/visft_ood
"""

import argparse
import copy
import json
import math
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner, load_checkpoint

# the linear probe's fixed recipe (see linear_probe)
PROBE_L2 = 1e-3
PROBE_MAX_ITER = 500
# metric keys of the CLIP test loop (their last part) -> short names
METRICS = {
    'accuracy/top1': 'zero-shot top-1',
    'i2t_R@1': 'i2t R@1',
    'i2t_R@5': 'i2t R@5',
    't2i_R@1': 't2i R@1',
    't2i_R@5': 't2i R@5',
    'R_mean': 'retrieval R_mean',
    'linear_probe/top1': 'linear-probe top-1',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='ViSFT out-of-domain evaluation: base vs tuned backbone '
        '(zero-shot classification, image-text retrieval, linear probe)'
    )
    parser.add_argument('config', help='the CLIP (foundation model) config')
    parser.add_argument('checkpoint', help='the CLIP checkpoint (the base)')
    parser.add_argument(
        '--tuned',
        nargs='+',
        required=True,
        help='tuned backbone file(s): LoRA releases, or training '
        'checkpoints (ViSFT stage-2 runs) with or without adapters',
    )
    parser.add_argument(
        '--tuned-config',
        help='the config that trained the --tuned checkpoints (its '
        'type="LoRA" backbone gives rank / alpha / parts / targets); needed '
        'for training checkpoints with adapters that saved no config, '
        'checked against the saved one otherwise',
    )
    parser.add_argument(
        '--prefix',
        default='backbone.',
        help='key prefix of the backbone in a training checkpoint',
    )
    parser.add_argument(
        '--data-root',
        required=True,
        help='the out-of-domain set (annotations/captions_val.json, '
        'classification_{train,val}.json), e.g. data/toy_coco_ood',
    )
    parser.add_argument('--work-dir', default='work_dirs/visft_ood')
    parser.add_argument(
        '--no-probe', action='store_true', help='skip the linear probe'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the CLIP config',
    )
    return parser.parse_args(argv)


# ------------------------------------------------------------------ data
def _set_data_root(cfg: Config, data_root: str) -> None:
    """Every test / probe dataset of ``cfg`` -> ``data_root`` (in place)."""
    loaders = cfg.test_dataloader
    loaders = [loaders] if 'dataset' in loaders else list(loaders.values())
    for loader in loaders:
        loader.dataset.data_root = data_root
        loader.num_workers = 0
        loader.persistent_workers = False
    for name in ('captions_val.json', 'classification_val.json'):
        path = osp.join(data_root, 'annotations', name)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'--data-root {data_root}: {path} does not exist (make the '
                'out-of-domain set with: python tools/dataset_converters/'
                f'generate_toy_coco.py {data_root} --domain ood)'
            )


def _probe_loader(cfg: Config, split: str) -> dict:
    """The zero-shot test loader of ``cfg``, reading ``split``'s
    classification file, in order."""
    loader = copy.deepcopy(cfg.test_dataloader)
    if 'dataset' not in loader:
        loader = loader.get('zero_shot')
        if loader is None:
            raise KeyError(
                'the CLIP config has no test_dataloader.zero_shot (the '
                'classification data of the linear probe)'
            )
    loader.dataset.ann_file = f'annotations/classification_{split}.json'
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    return loader


# ------------------------------------------------------- tuned backbones
def _read_tuned(path: str, prefix: str) -> Tuple[dict, Optional[dict], str]:
    """(backbone state dict, LoRA release meta or None, the config text a
    training checkpoint saved in its meta or '') of a --tuned file."""
    from mmvfm.fileio import safe_load
    from mmvfm.models.peft.lora_checkpoint import LORA_FORMAT

    if not osp.isfile(path):
        raise FileNotFoundError(f'--tuned: {path} does not exist')
    # weights-only: LoRA releases are the files people download
    ckpt = safe_load(path, 'cpu')
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if isinstance(meta, dict) and meta.get('format') == LORA_FORMAT:
        return dict(ckpt['state_dict']), meta, ''
    saved_cfg = meta.get('cfg', '') if isinstance(meta, dict) else ''
    state = ckpt.get('state_dict', ckpt)
    backbone = {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)
    }
    if not backbone:
        prefixes = sorted({k.split('.', 1)[0] + '.' for k in state})
        raise KeyError(
            f'--tuned {path}: no key starts with --prefix {prefix!r} (its '
            f'prefixes: {prefixes[:8]})'
        )
    return backbone, None, saved_cfg if isinstance(saved_cfg, str) else ''


_LORA_KEYS = ('targets', 'rank', 'alpha', 'dropout', 'parts')


def _find_lora(cfg: Config) -> Optional[dict]:
    """The first ``type='LoRA'`` dict of ``cfg.model``, depth first."""

    def find(node):
        if isinstance(node, dict):
            if node.get('type') == 'LoRA':
                return node
            for value in node.values():
                found = find(value)
                if found is not None:
                    return found
        return None

    return find(cfg.model.to_dict())


def _lora_cfg(
    tuned_config: Optional[str], path: str, saved_cfg: str = ''
) -> dict:
    """rank / alpha / dropout / parts / targets of the ``type='LoRA'``
    module that trained ``path``: from ``tuned_config`` and/or the config
    the checkpoint saved (mmengine writes it to ``meta['cfg']``). When both
    are there they must agree on every one of these fields."""
    found = {}
    if saved_cfg:
        lora = _find_lora(Config.fromstring(saved_cfg, '.py'))
        if lora is not None:
            found["the checkpoint's saved config"] = lora
    if tuned_config is not None:
        lora = _find_lora(Config.fromfile(tuned_config))
        if lora is None:
            raise ValueError(
                f'--tuned-config {tuned_config}: no type="LoRA" module in '
                'model'
            )
        found[f'--tuned-config {tuned_config}'] = lora
    if not found:
        raise ValueError(
            f'--tuned {path} is a training checkpoint with LoRA adapters and '
            'saved no config with a type="LoRA" module: give --tuned-config '
            '(the config that trained it) for their rank, alpha and parts'
        )
    picked = [{k: v[k] for k in _LORA_KEYS if k in v} for v in found.values()]
    if len(picked) == 2:
        for key in _LORA_KEYS:
            if picked[0].get(key) != picked[1].get(key):
                a, b = found
                raise ValueError(
                    f'--tuned {path}: LoRA {key!r} is '
                    f'{picked[0].get(key)!r} in {a} but '
                    f'{picked[1].get(key)!r} in {b}'
                )
    return picked[-1]


def _check_same_base(encoder, backbone: dict, path: str) -> None:
    """The frozen weights of a tuned checkpoint equal the base encoder's
    (the position embedding may differ in size)."""
    own = encoder.state_dict()
    for key, value in backbone.items():
        if 'lora_' in key or key not in own:
            continue
        if own[key].shape != value.shape:
            if 'pos_embed' in key:
                continue
            raise ValueError(
                f'--tuned {path}: {key} has shape {tuple(value.shape)}, the '
                f'base encoder {tuple(own[key].shape)}: not the same model'
            )
        if not torch.equal(own[key].float(), value.float()):
            diff = (own[key].float() - value.float()).abs().max().item()
            raise ValueError(
                f'--tuned {path}: {key} differs from the base encoder (max '
                f'|diff| {diff:.3g}): its adapters were tuned on another '
                'base; evaluate a merged export instead, or give the base '
                'CLIP checkpoint the tuning started from'
            )


def attach_tuned(
    encoder: torch.nn.Module,
    path: str,
    prefix: str = 'backbone.',
    tuned_config: Optional[str] = None,
) -> str:
    """Make ``encoder`` the tuned backbone of ``path`` (in place).

    Returns:
        str: ``'adapter'`` (LoRA attached: disabled = the base, enabled =
        the tuned backbone) or ``'weights'`` (the weights replaced).
    """
    from mmvfm.models.peft import apply_lora, load_lora, lora_layers

    backbone, meta, saved_cfg = _read_tuned(path, prefix)
    has_lora = any('lora_' in k for k in backbone)
    if not has_lora:
        missing, unexpected = encoder.load_state_dict(backbone, strict=False)
        if missing or unexpected:
            raise KeyError(
                f'--tuned {path}: backbone keys differ from the encoder '
                f'(missing {missing[:5]}, unexpected {unexpected[:5]})'
            )
        return 'weights'
    if meta is not None:  # a release: one target per adapted layer
        for name, layer in meta['layers'].items():
            apply_lora(
                encoder,
                [dict(pattern=re.escape(name), parts=layer['parts'])],
                rank=layer['rank'],
                alpha=layer['alpha'],
            )
        lora_state = backbone
    else:
        _check_same_base(encoder, backbone, path)
        lora = _lora_cfg(tuned_config, path, saved_cfg)
        apply_lora(
            encoder,
            lora['targets'],
            lora.get('rank', 8),
            lora.get('alpha', 1.0),
            lora.get('dropout', 0.0),
            lora.get('parts'),
        )
        lora_state = {k: v for k, v in backbone.items() if 'lora_' in k}
    if meta is not None:
        load_lora(encoder, dict(meta=meta, state_dict=lora_state))
    else:
        load_lora(encoder, lora_state)
    assert dict(lora_layers(encoder))
    return 'adapter'


# ---------------------------------------------------------- linear probe
@torch.no_grad()
def pooled_features(model, loader) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, C) mean-pooled last maps of ``model.image_encoder`` (before the
    CLIP projection) and (N,) labels, over ``loader``."""
    feats, labels = [], []
    model.eval()
    for data in loader:
        data = model.data_preprocessor(data, False)
        out = model.image_encoder(data['inputs'])
        out = out[-1] if isinstance(out, (list, tuple)) else out
        out = out.mean((2, 3)) if out.dim() == 4 else out.mean(1)
        feats.append(out.double())
        labels.extend(int(s.gt_label) for s in data['data_samples'])
    return torch.cat(feats), torch.tensor(labels)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    l2: float = PROBE_L2,
    max_iter: int = PROBE_MAX_ITER,
) -> float:
    """Top-1 of a linear probe, the fixed recipe: features standardised
    with the train split's mean and sd; a softmax regression (weights and
    biases, zero-initialised) minimising mean cross-entropy + ``l2`` *
    ||W||^2 by full-batch L-BFGS (strong Wolfe line search, ``max_iter``
    iterations), in float64. Deterministic given the features.

    Args:
        train_x, val_x: (N, C) features; train_y, val_y: (N,) labels.

    Returns:
        float: top-1 accuracy on the val split, in %.
    """
    mean, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-12)
    tx, vx = (train_x - mean) / sd, (val_x - mean) / sd
    weight = torch.zeros(tx.shape[1], num_classes, dtype=torch.float64)
    bias = torch.zeros(num_classes, dtype=torch.float64)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn='strong_wolfe',
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(tx @ weight + bias, train_y)
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    pred = (vx @ weight + bias).argmax(1)
    return float((pred == val_y).double().mean() * 100)


# ------------------------------------------------------------ statistics
def paired(base: float, tuned: Sequence[float]) -> dict:
    """Differences tuned - base: values, mean, sd (ddof 1), standard
    error (sd / sqrt(n)); sd and se None below two values."""
    diffs = [t - base for t in tuned]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = (
        math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        if n > 1
        else None
    )
    return dict(
        diffs=diffs,
        mean=mean,
        sd=sd,
        se=sd / math.sqrt(n) if sd is not None else None,
    )


def _short(metrics: Dict[str, float]) -> Dict[str, float]:
    """The :data:`METRICS` of a test loop's metrics, by short name."""
    out = {}
    for suffix, name in METRICS.items():
        for key, value in metrics.items():
            if key == suffix or key.endswith('/' + suffix):
                out[name] = float(value)
                break
    return out


def render_markdown(result: dict) -> str:
    """The results table: one row per metric, base, each tuned file,
    and the paired difference mean +- SE."""
    names = [osp.basename(osp.dirname(p)) or p for p in result['tuned']]
    head = '| metric | base | ' + ' | '.join(names) + ' | tuned - base |'
    lines = [head, '|' + '---|' * (len(names) + 3)]
    for metric, base in result['base'].items():
        tuned = [t[metric] for t in result['tuned_metrics']]
        d = result['paired'][metric]
        se = f' ± {d["se"]:.2f}' if d['se'] is not None else ''
        cells = ' | '.join(f'{t:.2f}' for t in tuned)
        lines.append(
            f'| {metric} | {base:.2f} | {cells} | {d["mean"]:+.2f}{se} |'
        )
    return '\n'.join(lines) + '\n'


def plot(result: dict, path: str) -> None:
    """Base vs tuned per metric: a bar for the base, a dot per tuned file
    and a bar for their mean."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = list(result['base'])
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.6))
    xs = range(len(metrics))
    base = [result['base'][m] for m in metrics]
    tuned = [[t[m] for t in result['tuned_metrics']] for m in metrics]
    ax.bar([x - 0.2 for x in xs], base, 0.4, label='base', color='#999')
    ax.bar(
        [x + 0.2 for x in xs],
        [sum(t) / len(t) for t in tuned],
        0.4,
        label=f'tuned (mean of {len(result["tuned"])})',
        color='#4c72b0',
    )
    for x, values in zip(xs, tuned):
        ax.plot([x + 0.2] * len(values), values, 'k.', ms=6)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(metrics, rotation=20, ha='right')
    ax.set_ylabel('%')
    ax.set_title(f'out of domain: {result["data_root"]}')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main
def _evaluate(runner, model, probe: Optional[dict]) -> Dict[str, float]:
    metrics = dict(runner.test())
    if probe is not None:
        tx, ty = pooled_features(model, probe['train'])
        vx, vy = pooled_features(model, probe['val'])
        metrics['linear_probe/top1'] = linear_probe(
            tx, ty, vx, vy, probe['num_classes']
        )
    return _short(metrics)


def main(argv=None) -> dict:
    from mmvfm.models.peft import set_lora_enabled

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    cfg.load_from = None
    cfg.train_dataloader = cfg.train_cfg = cfg.optim_wrapper = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.param_scheduler = None
    _set_data_root(cfg, args.data_root)
    cfg.experiment_name = 'visft_ood_eval'
    if 'visualizer' in cfg:
        cfg.visualizer.name = 'visft_ood_eval'

    # every --tuned file is read (weights-only) and its keys checked before
    # the base evaluation, which takes minutes
    from mmvfm.fileio import CheckpointError

    for path in args.tuned:
        try:
            _read_tuned(path, args.prefix)
        except CheckpointError as e:
            raise SystemExit(f'error: --tuned: {e}') from None

    runner = Runner.from_cfg(cfg)
    model = runner.model
    encoder = model.image_encoder
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    base_encoder = copy.deepcopy(encoder)

    probe = None
    if not args.no_probe:
        classes = (model.zero_shot or {}).get('classes')
        if not classes:
            raise ValueError(
                'the linear probe needs the class list: the CLIP config has '
                'no model.zero_shot.classes'
            )
        probe = dict(
            train=runner.build_dataloader(_probe_loader(cfg, 'train')),
            val=runner.build_dataloader(_probe_loader(cfg, 'val')),
            num_classes=len(classes),
        )

    print_log('== base backbone', logger='current')
    base = _evaluate(runner, model, probe)
    tuned_metrics: List[Dict[str, float]] = []
    modes = []
    for path in args.tuned:
        print_log(f'== tuned backbone: {path}', logger='current')
        # a fresh base encoder per file (no adapter of the last file)
        model.image_encoder = encoder = copy.deepcopy(base_encoder)
        mode = attach_tuned(encoder, path, args.prefix, args.tuned_config)
        modes.append(mode)
        if mode == 'adapter':
            # the adapters off must be the base exactly
            set_lora_enabled(encoder, False)
            check = _evaluate(runner, model, None)
            for key, value in check.items():
                if abs(value - base[key]) > 1e-6:
                    raise RuntimeError(
                        f'{path}: with its adapters disabled the encoder '
                        f'gives {key} {value} != the base {base[key]}'
                    )
            set_lora_enabled(encoder, True)
        tuned_metrics.append(_evaluate(runner, model, probe))

    result = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        data_root=args.data_root,
        tuned=list(args.tuned),
        modes=modes,
        probe=None
        if probe is None
        else dict(l2=PROBE_L2, max_iter=PROBE_MAX_ITER, features='pooled'),
        base=base,
        tuned_metrics=tuned_metrics,
        paired={
            m: paired(base[m], [t[m] for t in tuned_metrics]) for m in base
        },
    )
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'ood_eval.json'), 'w') as f:
        json.dump(result, f, indent=1)
    table = render_markdown(result)
    with open(osp.join(args.work_dir, 'ood_eval.md'), 'w') as f:
        f.write(table)
    plot(result, osp.join(args.work_dir, 'ood_eval.png'))
    print_log('\n' + table, logger='current')
    print_log(
        f'written: {args.work_dir}/ood_eval.{{json,md,png}}', logger='current'
    )
    return result


if __name__ == '__main__':
    main()
