# Copyright (c) mmvfm contributors. All rights reserved.
"""Each FGD term next to the detection loss, on real training batches.

    python tools/analysis_tools/fgd_loss_magnitudes.py CONFIG \\
        [--checkpoint CKPT] [--batches 4] [--target fg=0.1 bg=0.05 ...]

CONFIG is an FGD distiller config (its teacher from ``model.teacher_ckpt``;
the student as initialised -- ``init_student`` included -- or from
``--checkpoint``). On ``--batches`` training batches (the config's train
pipeline and batch size, in train mode, without a step) the tool prints,
per distilled level and term (``fg``, ``bg``, ``at``, ``rela``):

- the *raw* term (weight 1) and the config's weight, and the weighted term
  as a ratio to the student's detection loss (the sum of its losses);
- what sets the raw term's size (the analysis of ``FGDLoss``'s docs,
  "Sizing the weights"): channels ``C``, map size ``H x W``, the teacher's
  mean ``|F_t|``, the mean-square student-teacher difference, boxes per
  image, the share of the map under boxes and the teacher's mean spatial
  attention on foreground pixels;
- with ``--target``: the weights that would make each term that ratio of
  the detection loss on these batches (``w = ratio * L_det / raw``).

``--json OUT`` writes all of it.
"""

import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.utils import (  # noqa: E402
    check_data_paths,
    load_config,
    register_all_modules,
)

TERMS = ('fg', 'bg', 'at', 'rela')
WEIGHTS = dict(
    fg='alpha_fgd', bg='beta_fgd', at='gamma_fgd', rela='lambda_fgd'
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='FGD terms vs the detection loss on training batches'
    )
    parser.add_argument('config', help='FGD distiller config')
    parser.add_argument('--checkpoint', help='distiller checkpoint')
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument(
        '--target',
        nargs='+',
        default=[],
        metavar='TERM=RATIO',
        help='ratios to the detection loss to size the weights for '
        '(e.g. fg=0.1 bg=0.05 at=0.02 rela=0.02), the same at every level',
    )
    parser.add_argument('--json', help='write the figures here')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error('--batches must be >= 1')
    targets = {}
    for item in args.target:
        term, _, value = item.partition('=')
        if term not in TERMS or not value:
            parser.error(f'--target {item!r}: TERM=RATIO, TERM in {TERMS}')
        targets[term] = float(value)
    args.target = targets
    return args


@torch.no_grad()
def level_stats(loss, feat_s, feat_t, gt_bboxes, metas) -> dict:
    """Raw terms (weights 1) and what sets their size, for one level.

    Args:
        loss (FGDLoss): the level's loss module.
        feat_s (Tensor): (N, Cs, H, W) student map.
        feat_t (Tensor): (N, C, H, W) teacher map.
        gt_bboxes (list[Tensor]): N (n_i, 4) boxes.
        metas (list[dict]): N image metas.
    """
    saved = {k: getattr(loss, w) for k, w in WEIGHTS.items()}
    try:
        for w in WEIGHTS.values():
            setattr(loss, w, 1.0)
        raw = loss(feat_s, feat_t, gt_bboxes, metas, return_terms=True)
    finally:
        for k, w in WEIGHTS.items():
            setattr(loss, w, saved[k])
    s = feat_s.float()
    if loss.align is not None:
        s = loss.align(s)
    t = feat_t.float()
    N, C, H, W = t.shape
    fg, _ = loss.get_masks(gt_bboxes, metas, (H, W), device=t.device)
    fg_pixels = (fg > 0).float()
    att_t, _ = loss.get_attention(t)
    on_fg = (att_t * fg_pixels).sum() / fg_pixels.sum().clamp(min=1)
    return dict(
        raw={k: float(v) for k, v in raw.items()},
        weights=saved,
        channels=C,
        map_hw=[H, W],
        mean_abs_teacher=float(t.abs().mean()),
        mean_sq_diff=float((s - t).pow(2).mean()),
        boxes_per_image=sum(len(b) for b in gt_bboxes) / N,
        fg_share=float(fg_pixels.mean()),
        teacher_attention_on_fg=float(on_fg),
    )


def measure(model, batches: List[dict]) -> dict:
    """Per level, the mean of :func:`level_stats` over the batches, and
    the mean detection loss."""
    from mmvfm.models.losses import FGDLoss

    det: List[float] = []
    per_level: Dict[str, List[dict]] = {}
    model.train()
    for data in batches:
        data = model.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        with torch.no_grad():
            for rec in (
                *model.student_recorders.values(),
                *model.teacher_recorders.values(),
            ):
                rec.reset()
            model._run_teacher(inputs, samples)
            losses = model.student.loss(inputs, samples)
        # the student's total loss, as its training step sums it
        det.append(float(model.student.parse_losses(losses)[0]))
        gt = [s.gt_instances.bboxes for s in samples]
        metas = [s.metainfo for s in samples]
        for name, loss in model.distill_losses.items():
            if not isinstance(loss, FGDLoss):
                continue
            rec = model.loss_inputs[name]
            per_level.setdefault(name, []).append(
                level_stats(
                    loss,
                    model.student_recorders[rec].get(),
                    model.teacher_recorders[rec].get(),
                    gt,
                    metas,
                )
            )
    if not per_level:
        raise SystemExit('error: the distiller has no FGDLoss')
    levels = {}
    for name, stats in per_level.items():
        mean = dict(stats[0])
        for key in (
            'mean_abs_teacher',
            'mean_sq_diff',
            'boxes_per_image',
            'fg_share',
            'teacher_attention_on_fg',
        ):
            mean[key] = sum(s[key] for s in stats) / len(stats)
        mean['raw'] = {
            k: sum(s['raw'][k] for s in stats) / len(stats) for k in TERMS
        }
        levels[name] = mean
    return dict(det_loss=sum(det) / len(det), levels=levels)


def suggest(result: dict, targets: Dict[str, float]) -> dict:
    """``{level: {term: weight}}`` giving each term ``targets[term]`` x
    the detection loss (terms without a target keep their weight)."""
    out = {}
    for name, level in result['levels'].items():
        out[name] = {}
        for term in TERMS:
            weight = level['weights'][term]
            if term in targets and level['raw'][term] > 0:
                raw = level['raw'][term]
                weight = targets[term] * result['det_loss'] / raw
            out[name][WEIGHTS[term]] = weight
    return out


def render(result: dict, suggested: Optional[dict] = None) -> str:
    det = result['det_loss']
    lines = [
        f'detection loss (student, sum of its losses): {det:.4g}',
        '',
        '| level | C | HxW | mean abs F_t | mean (F_s-F_t)^2 | boxes/img '
        '| fg share | S_t on fg |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for name, lv in result['levels'].items():
        h, w = lv['map_hw']
        lines.append(
            f'| {name} | {lv["channels"]} | {h}x{w} | '
            f'{lv["mean_abs_teacher"]:.3g} | {lv["mean_sq_diff"]:.3g} | '
            f'{lv["boxes_per_image"]:.2f} | {lv["fg_share"]:.3f} | '
            f'{lv["teacher_attention_on_fg"]:.3g} |'
        )
    lines += [
        '',
        '| level | term | raw (weight 1) | weight | weighted / det |'
        + (' suggested weight |' if suggested else ''),
        '|---|---|---|---|---|' + ('---|' if suggested else ''),
    ]
    for name, lv in result['levels'].items():
        for term in TERMS:
            raw, weight = lv['raw'][term], lv['weights'][term]
            row = (
                f'| {name} | {term} | {raw:.4g} | {weight:.3g} | '
                f'{raw * weight / det:.3g} |'
            )
            if suggested:
                row += f' {suggested[name][WEIGHTS[term]]:.3g} |'
            lines.append(row)
    total = sum(
        lv['raw'][t] * lv['weights'][t]
        for lv in result['levels'].values()
        for t in TERMS
    )
    lines += ['', f'all FGD terms / detection loss: {total / det:.3g}']
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmdet.registry import MODELS
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import load_checkpoint

    try:
        cfg = load_config(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        register_all_modules(init_default_scope=True)
        check_data_paths(cfg, ['train_dataloader'])
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    if cfg.model.get('type') != 'SingleTeacherDistiller':
        raise SystemExit(
            "error: the config's model is not a SingleTeacherDistiller"
        )
    torch.manual_seed(args.seed)
    from mmvfm.fileio import CheckpointError

    try:
        model = MODELS.build(cfg.model)  # a teacher_ckpt is loaded here
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint, map_location='cpu')
    except CheckpointError as e:
        raise SystemExit(f'error: {e}') from None
    if not args.checkpoint:
        model.init_weights()
    loader_cfg = dict(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg, seed=args.seed)
    batches = []
    for data in loader:
        batches.append(data)
        if len(batches) == args.batches:
            break
    result = measure(model, batches)
    suggested = suggest(result, args.target) if args.target else None
    result['suggested'] = suggested
    result['batches'] = len(batches)
    print(render(result, suggested))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'written: {args.json}')
    return result


if __name__ == '__main__':
    main()
