# Copyright (c) mmvfm contributors. All rights reserved.
"""Draw what FGD sees on one image: per distilled level, the foreground and
background masks and the teacher's and the student's spatial attention.

    python tools/analysis_tools/fgd_visualize.py CONFIG [--checkpoint CKPT]
        [--index 0] [--split val] --out fgd.png

CONFIG is an FGD distiller config (e.g. ``configs/fgd/retinanet_r50.py``);
CHECKPOINT a checkpoint of that distiller (default: the student as
initialised, the teacher from ``model.teacher_ckpt``).
"""

import argparse
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.utils import (
    check_data_paths,
    load_config,  # noqa: E402
    register_all_modules,
)


def fgd_maps(model, data: dict) -> list:
    """Run teacher and student feature extraction on one preprocessed batch
    and return, per FGD loss, a dict of numpy maps for the first image:
    ``fg``, ``bg`` (masks), ``att_t``, ``att_s`` (spatial attention) and
    the loss name.
    """
    from mmvfm.models.losses import FGDLoss

    inputs, samples = data['inputs'], data['data_samples']
    with torch.no_grad():
        for rec in (
            *model.student_recorders.values(),
            *model.teacher_recorders.values(),
        ):
            rec.reset()
        model.teacher.extract_feat(inputs)
        model.student.extract_feat(inputs)
        gt = [s.gt_instances.bboxes for s in samples]
        metas = [s.metainfo for s in samples]
        rows = []
        for name, loss in model.distill_losses.items():
            if not isinstance(loss, FGDLoss):
                continue
            rec = model.loss_inputs[name]
            feat_s = model.student_recorders[rec].get()
            feat_t = model.teacher_recorders[rec].get()
            if loss.align is not None:
                feat_s = loss.align(feat_s)
            fg, bg = loss.get_masks(gt, metas, feat_t.shape[-2:])
            att_t, _ = loss.get_attention(feat_t)
            att_s, _ = loss.get_attention(feat_s)
            rows.append(
                dict(
                    name=name,
                    fg=fg[0].cpu().numpy(),
                    bg=bg[0].cpu().numpy(),
                    att_t=att_t[0].cpu().numpy(),
                    att_s=att_s[0].cpu().numpy(),
                )
            )
    return rows


def draw(
    image: np.ndarray,
    boxes: np.ndarray,
    rows: list,
    out: str,
    title: str = '',
    dpi: int = 100,
) -> None:
    """A grid: one row per level (image | fg | bg | teacher attention |
    student attention), saved as PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = (
        'image',
        'foreground mask',
        'background mask',
        'teacher attention',
        'student attention',
    )
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(3 * len(cols), 2.6 * len(rows)),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        h, w = row['fg'].shape
        for c, key in enumerate((None, 'fg', 'bg', 'att_t', 'att_s')):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if key is None:
                ax.imshow(image)
                for x1, y1, x2, y2 in boxes:
                    ax.add_patch(
                        plt.Rectangle(
                            (x1, y1),
                            x2 - x1,
                            y2 - y1,
                            fill=False,
                            color='lime',
                            linewidth=1,
                        )
                    )
                ax.set_ylabel(f'{row["name"]}\n{h}x{w}', fontsize=8)
            else:
                im = ax.imshow(
                    row[key], cmap='viridis', interpolation='nearest'
                )
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='FGD distiller config')
    parser.add_argument('--checkpoint', help='distiller checkpoint')
    parser.add_argument(
        '--index', type=int, default=0, help='image index in the dataset'
    )
    parser.add_argument(
        '--split', default='val', choices=['train', 'val', 'test']
    )
    parser.add_argument('--out', default='fgd_maps.png')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    from mmdet.registry import DATASETS, MODELS
    from mmengine.dataset import pseudo_collate
    from mmengine.runner.checkpoint import load_checkpoint

    try:
        cfg = load_config(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        register_all_modules(init_default_scope=True)
        check_data_paths(cfg, [f'{args.split}_dataloader'])
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    if cfg.model.get('type') != 'SingleTeacherDistiller':
        raise SystemExit(
            "error: the config's model is not a SingleTeacherDistiller"
        )
    from mmvfm.fileio import CheckpointError

    try:
        model = MODELS.build(cfg.model)  # a teacher_ckpt is loaded here
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint, map_location='cpu')
    except CheckpointError as e:
        raise SystemExit(f'error: {e}') from None
    if not args.checkpoint:
        model.init_weights()
    model.eval()

    ds_cfg = cfg[f'{args.split}_dataloader'].dataset
    dataset = DATASETS.build(ds_cfg)
    item = dataset[args.index]
    data = model.data_preprocessor(pseudo_collate([item]), False)
    rows = fgd_maps(model, data)
    if not rows:
        raise SystemExit('error: the distiller has no FGDLoss')
    sample = data['data_samples'][0]
    h, w = sample.img_shape
    image = data['inputs'][0].permute(1, 2, 0).cpu().numpy()[:h, :w]
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    boxes = sample.gt_instances.bboxes
    boxes = getattr(boxes, 'tensor', boxes).cpu().numpy()
    draw(image, boxes, rows, args.out, osp.basename(sample.img_path), args.dpi)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
