# Copyright (c) mmvfm contributors. All rights reserved.
"""Fuse the detections of several models with weighted boxes fusion (WBF)
and evaluate the fused set (COCO bbox mAP).

    python tools/test.py CONFIG_A CKPT_A \
        --cfg-options test_evaluator.outfile_prefix=work_dirs/a
    python tools/analysis_tools/fuse_results.py work_dirs/a.bbox.json \
        work_dirs/b.bbox.json --annotation ANN_FILE [--weights 2 1] \
        [--fusion-iou-thr 0.55] [--eval-single] [--save-fusion-results] \
        [--out-dir outputs]

mmdet's ``fuse_results.py`` with its options, on mmdet's
``weighted_boxes_fusion``. mmdet 3.3's cannot run (it reads
``args.pred_results`` and ``args.models_name``, which its parser does not
define) and fuses COCO's ``[x, y, w, h]`` boxes as if they were
``[x1, y1, x2, y2]``; here the boxes are converted for the fusion and
back. Results are read as JSON only.
"""

import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import numpy as np  # noqa: E402

import mmvfm  # noqa: E402,F401  (stack fixes: mmdet.models imports)

RESULT_KEYS = ('image_id', 'category_id', 'bbox', 'score')


def load_json_results(path: str) -> list:
    """COCO-format detections (``PREFIX.bbox.json`` of tools/test.py)."""
    if not osp.isfile(path):
        raise SystemExit(f'error: results file "{path}" does not exist')
    if not path.endswith('.json'):
        raise SystemExit(
            f'error: results file "{path}" must be COCO-format .json (the '
            'results: tools/test.py --cfg-options '
            'test_evaluator.outfile_prefix=PREFIX writes PREFIX.bbox.json)'
        )
    with open(path, encoding='utf-8') as f:
        try:
            results = json.load(f)
        except ValueError as e:
            raise SystemExit(
                f'error: results file "{path}" is not valid JSON ({e})'
            ) from None
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and all(k in r for k in RESULT_KEYS)
        for r in results
    ):
        raise SystemExit(
            f'error: results file "{path}" is not a list of COCO '
            f'detections (dicts with {", ".join(RESULT_KEYS)})'
        )
    return results


def coco_eval(coco_gt, results: list) -> np.ndarray:
    """COCO bbox evaluation; prints the summary, returns its 12 stats."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        print('no detections: every AP is 0')
        return np.zeros(12)
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType='bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def fuse(
    coco_gt,
    predictions: list,
    weights=None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    conf_type: str = 'avg',
) -> list:
    """WBF of each image's detections over the models.

    Args:
        coco_gt (COCO): the annotations (their image ids).
        predictions (list[list[dict]]): per model, COCO detections.

    Returns:
        list[dict]: the fused COCO detections (``[x, y, w, h]`` boxes).
    """
    from mmdet.models.utils import weighted_boxes_fusion
    from mmengine.utils import ProgressBar

    per_image = {
        image_id: [([], [], []) for _ in predictions]
        for image_id in coco_gt.getImgIds()
    }
    for model, dets in enumerate(predictions):
        for det in dets:
            if det['image_id'] not in per_image:
                raise SystemExit(
                    f'error: model {model} has a detection of image '
                    f'{det["image_id"]}, which the annotations lack'
                )
            x, y, w, h = det['bbox']
            boxes, scores, labels = per_image[det['image_id']][model]
            boxes.append([x, y, x + w, y + h])  # WBF fuses x1, y1, x2, y2
            scores.append(det['score'])
            labels.append(det['category_id'])
    fused = []
    progress = ProgressBar(len(per_image))
    for image_id, models in per_image.items():
        boxes, scores, labels = weighted_boxes_fusion(
            [m[0] for m in models],
            [m[1] for m in models],
            [m[2] for m in models],
            weights=weights,
            iou_thr=iou_thr,
            skip_box_thr=skip_box_thr,
            conf_type=conf_type,
        )
        for (x1, y1, x2, y2), score, label in zip(
            boxes.tolist(), scores.tolist(), labels.tolist()
        ):
            fused.append(
                dict(
                    image_id=image_id,
                    category_id=int(label),
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    score=float(score),
                )
            )
        progress.update()
    return fused


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fuse the detections of several models with weighted '
        'boxes fusion'
    )
    parser.add_argument(
        'pred_results',
        nargs='+',
        metavar='pred-results',
        help='COCO-format results (.json) of each model',
    )
    parser.add_argument(
        '--annotation', required=True, help='annotation file (COCO json)'
    )
    parser.add_argument(
        '--weights',
        type=float,
        nargs='*',
        default=None,
        help='a weight per model, in the order of the results',
    )
    parser.add_argument(
        '--fusion-iou-thr',
        type=float,
        default=0.55,
        help='IoU at which boxes are fused',
    )
    parser.add_argument(
        '--skip-box-thr',
        type=float,
        default=0.0,
        help='drop boxes scoring below this',
    )
    parser.add_argument(
        '--conf-type',
        default='avg',
        choices=['avg', 'max', 'box_and_model_avg', 'absent_model_aware_avg'],
        help="a fused box's score from its boxes' scores",
    )
    parser.add_argument(
        '--eval-single',
        action='store_true',
        help='evaluate each model first',
    )
    parser.add_argument(
        '--save-fusion-results',
        action='store_true',
        help='write OUT_DIR/fusion_results.json',
    )
    parser.add_argument(
        '--out-dir', default='outputs', help='where to write the results'
    )
    args = parser.parse_args(argv)
    if args.weights and len(args.weights) != len(args.pred_results):
        parser.error(
            f'{len(args.weights)} --weights for '
            f'{len(args.pred_results)} results'
        )
    return args


def main(argv=None):
    """Returns ``{'fused': [...], 'stats': ndarray(12), 'single':
    [stats per model, with --eval-single]}``."""
    from pycocotools.coco import COCO

    args = parse_args(argv)
    if not osp.isfile(args.annotation):
        raise SystemExit(
            f'error: annotation file "{args.annotation}" does not exist'
        )
    predictions = [load_json_results(p) for p in args.pred_results]
    coco_gt = COCO(args.annotation)
    single = []
    if args.eval_single:
        for path, dets in zip(args.pred_results, predictions):
            print(f'Evaluate {path}...')
            single.append(coco_eval(coco_gt, dets))
    fused = fuse(
        coco_gt,
        predictions,
        args.weights or None,
        args.fusion_iou_thr,
        args.skip_box_thr,
        args.conf_type,
    )
    if args.save_fusion_results:
        os.makedirs(args.out_dir, exist_ok=True)
        out_file = osp.join(args.out_dir, 'fusion_results.json')
        with open(out_file, 'w', encoding='utf-8') as f:
            json.dump(fused, f)
        print(f'\nfused results written to {out_file}')
    print('\nEvaluate the fused results...')
    stats = coco_eval(coco_gt, fused)
    return dict(fused=fused, stats=stats, single=single)


if __name__ == '__main__':
    main()
