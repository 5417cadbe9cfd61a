# Copyright (c) mmvfm contributors. All rights reserved.
"""Draw a dataset's ground truth after its pipeline (boxes, labels, masks).

    python tools/analysis_tools/browse_dataset.py CONFIG \
        --output-dir work_dirs/browse [--split train] [--max-images 20]

mmdet's ``browse_dataset.py`` (its options: ``--output-dir``,
``--not-show``, ``--show-interval``, ``--cfg-options``) after
``import mmvfm``: mmdet's crashes on import beside a CPU torch
(``operator torchvision::nms does not exist``) before it reads a config's
``custom_imports``. Also: ``--split`` (mmdet's draws the train set only),
``--max-images``, ``mmdet::`` config paths, an absent toy set generated
first, no window without a display.
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmengine.config import DictAction  # noqa: E402
from mmengine.utils import ProgressBar  # noqa: E402

import mmvfm  # noqa: E402,F401
from mmvfm.datasets import prepare_toy_data  # noqa: E402
from mmvfm.utils import (  # noqa: E402
    check_data_paths,
    load_config,
    register_all_modules,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Browse a dataset')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--split',
        default='train',
        choices=['train', 'val', 'test'],
        help="which dataloader's dataset (and pipeline) to draw",
    )
    parser.add_argument(
        '--output-dir',
        default=None,
        type=str,
        help='save the drawn images here',
    )
    parser.add_argument(
        '--max-images',
        type=int,
        default=None,
        help='draw at most this many images',
    )
    parser.add_argument(
        '--not-show',
        action='store_true',
        help='do not open a window (implied without a display)',
    )
    parser.add_argument(
        '--show-interval',
        type=float,
        default=2,
        help='seconds each image is shown',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings',
    )
    args = parser.parse_args(argv)
    if sys.platform.startswith('linux') and not os.environ.get('DISPLAY'):
        args.not_show = True
    if args.not_show and args.output_dir is None:
        parser.error(
            'nothing to do: give --output-dir (no display here, or --not-show)'
        )
    return args


def browse(
    cfg,
    split='train',
    output_dir=None,
    max_images=None,
    show=False,
    show_interval=2.0,
) -> list:
    """Draw the ground truth of ``cfg.<split>_dataloader.dataset``.

    Returns:
        list[str]: written image files (empty when ``output_dir`` is None).
    """
    from mmdet.registry import DATASETS, VISUALIZERS
    from mmdet.structures.bbox import BaseBoxes

    register_all_modules(init_default_scope=True)
    loader = f'{split}_dataloader'
    prepare_toy_data(cfg, [loader])  # an absent toy set: generated
    check_data_paths(cfg, [loader])
    dataset = DATASETS.build(cfg[loader].dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo

    num = len(dataset) if max_images is None else min(max_images, len(dataset))
    written = []
    progress = ProgressBar(num)
    for idx in range(num):
        item = dataset[idx]
        img = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR->RGB
        sample = item['data_samples']
        gt = sample.gt_instances
        if isinstance(gt.get('bboxes'), BaseBoxes):
            gt.bboxes = gt.bboxes.tensor
        sample = sample.numpy()
        out_file = None
        if output_dir is not None:
            out_file = osp.join(output_dir, osp.basename(sample.img_path))
            written.append(out_file)
        visualizer.add_datasample(
            osp.basename(sample.img_path),
            img,
            data_sample=sample,
            draw_pred=False,
            show=show,
            wait_time=show_interval,
            out_file=out_file,
        )
        progress.update()
    return written


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config)
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}') from None
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    try:
        written = browse(
            cfg,
            args.split,
            args.output_dir,
            args.max_images,
            not args.not_show,
            args.show_interval,
        )
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None
    if written:
        print(f'\n{len(written)} images written to {args.output_dir}')


if __name__ == '__main__':
    main()
