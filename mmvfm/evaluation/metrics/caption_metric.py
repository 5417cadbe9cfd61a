# Copyright (c) mmvfm contributors. All rights reserved.
"""Caption metrics: BLEU-1..4 and CIDEr-D with a pure-Python tokenizer.

Scores come from pycocoevalcap's ``Bleu(4)`` and ``Cider()`` scorers (pure
Python); captions are tokenized by :func:`~.caption_tokenizer.ptb_tokenize`
instead of pycocoevalcap's Java ``PTBTokenizer``, so no Java runtime is
needed.

CIDEr-D: pycocoevalcap 1.2's ``Cider`` *is* CIDEr-D (Vedantam et al.,
CVPR 2015) -- checked in its ``cider_scorer.py``: n = 1..4,
tf-idf vectors with ``idf = log(N_images) - log(max(1, df))``, the
numerator of each cosine clipped (``min(g_cand, g_ref) * g_ref``), the
Gaussian length penalty ``exp(-(l_cand - l_ref)^2 / (2 * 6^2))``, the mean
over n and over references, times 10, no stemming. Lengths are counted in
bigrams (words - 1), which only matters for empty captions.
"""

import os.path as osp
from typing import Any, Dict, Hashable, List, Optional, Sequence

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.fileio import exists, load
from mmengine.structures import BaseDataElement

from .caption_tokenizer import ptb_tokenize


def _coco_scorers():
    """Import pycocoevalcap's scorers (pure Python, no Java needed)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as e:
        raise ImportError(
            'CaptionMetric needs pycocoevalcap: pip install pycocoevalcap==1.2'
        ) from e
    return Bleu, Cider


def _get(sample: Any, key: str) -> Any:
    """``sample[key]`` for a dict or a ``BaseDataElement``, else None."""
    if isinstance(sample, (dict, BaseDataElement)):
        return sample.get(key)
    raise TypeError(
        'data samples must be dicts or BaseDataElements, got '
        f'{type(sample).__name__}'
    )


def _norm_id(img_id: Any) -> Hashable:
    """Image ids as ints when they are integers (also numpy/torch scalars
    and digit strings), so that json ids and dataset ids compare equal."""
    if hasattr(img_id, 'item'):  # numpy / torch scalar
        img_id = img_id.item()
    if isinstance(img_id, str) and img_id.isdigit():
        return int(img_id)
    return img_id


@METRICS.register_module()
class CaptionMetric(BaseMetric):
    """BLEU-1..4 and CIDEr-D of generated captions (COCO caption protocol).

    Each data sample needs ``pred_caption`` (str) and its references:
    ``gt_caption`` (str or list of str) or, when ``ann_file`` is given, an
    image id (``img_id`` or ``image_id``) whose captions the file lists.

    Scale: as pycocoevalcap (and mmpretrain's ``COCOCaption``) reports
    them: ``BLEU-n`` is a fraction in [0, 1], ``CIDEr-D`` is on the paper's
    scale, in [0, 10] (papers usually print both x100, e.g. a CIDEr-D of
    1.17 here is "117.0").

    BLEU is corpus-level (n-gram counts summed over all images before the
    precisions are taken) with the brevity penalty computed from, for each
    image, the reference length closest to the candidate's (the shorter
    one on ties).

    CIDEr-D's document frequencies are counted over the references of the
    evaluated images only (``idf = log(N_images / df)``), so the score
    depends on the evaluated set, not just on each image: it differs
    between a subset and the full val set, an n-gram in the references of
    every image weighs nothing, and on a single image every idf is
    ``log(1) = 0``, so CIDEr-D is 0. Compare CIDEr-D only on the same
    images. It is 0 as well when no reference has a word.

    Tokenization: :func:`~.caption_tokenizer.ptb_tokenize`, a pure-Python
    approximation of pycocoevalcap's Java ``PTBTokenizer`` (its module
    docstring lists where they may differ).

    Args:
        ann_file: COCO captions json (``annotations`` with ``image_id``
            and ``caption``) to take the references from, by image id.
            With it, a repeated image id is scored once (its first
            prediction). Without it, references come from each sample's
            ``gt_caption`` and every sample is scored.
        collect_device: ``'cpu'`` or ``'gpu'``, for collecting results
            across ranks.
        prefix: Prefix of the metric names; defaults to ``'caption'``.
        collect_dir: Directory for collecting results across ranks
            (``collect_device='cpu'`` only).

    Returns from :meth:`evaluate`:
        ``{prefix}/BLEU-1`` .. ``{prefix}/BLEU-4`` and ``{prefix}/CIDEr-D``.

    Example:
        >>> metric = METRICS.build(dict(type='CaptionMetric'))
        >>> metric.process(
        ...     None, [dict(pred_caption='a cat', gt_caption=['a cat'])]
        ... )
    """

    default_prefix: Optional[str] = 'caption'

    def __init__(
        self,
        ann_file: Optional[str] = None,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir,
        )
        _coco_scorers()  # fail at build time when pycocoevalcap is missing
        self.ann_file = ann_file
        self._refs: Optional[Dict[Hashable, List[str]]] = None
        if ann_file is not None:
            self._refs = self._load_references(ann_file)

    @staticmethod
    def _load_references(ann_file: str) -> Dict[Hashable, List[str]]:
        """Image id -> reference captions, from a COCO captions json."""
        if not exists(ann_file):
            raise FileNotFoundError(
                f'CaptionMetric: ann_file "{ann_file}" does not exist '
                f'(relative to "{osp.abspath(".")}")'
            )
        data = load(ann_file)
        anns = data.get('annotations') if isinstance(data, dict) else None
        if not isinstance(anns, list):
            raise ValueError(
                f'CaptionMetric: ann_file "{ann_file}" is not a COCO '
                'captions file (no "annotations" list)'
            )
        refs: Dict[Hashable, List[str]] = {}
        for ann in anns:
            if 'image_id' not in ann or 'caption' not in ann:
                raise ValueError(
                    f'CaptionMetric: an annotation in ann_file "{ann_file}" '
                    f'lacks "image_id" or "caption": {ann}'
                )
            refs.setdefault(_norm_id(ann['image_id']), []).append(
                ann['caption']
            )
        return refs

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each sample's prediction and references (or image id).

        Args:
            data_batch: Unused.
            data_samples: Dicts or ``BaseDataElement``s (e.g. mmpretrain's
                ``DataSample``) with ``pred_caption`` and ``gt_caption``
                or ``img_id``/``image_id`` (see the class docstring).
        """
        for sample in data_samples:
            pred = _get(sample, 'pred_caption')
            if not isinstance(pred, str):
                raise ValueError(
                    'CaptionMetric: each data sample needs a "pred_caption" '
                    f'string, got {type(pred).__name__}'
                )
            if self._refs is not None:
                img_id = _get(sample, 'img_id')
                if img_id is None:
                    img_id = _get(sample, 'image_id')
                if img_id is None:
                    raise ValueError(
                        'CaptionMetric: with ann_file, each data sample needs '
                        'an image id ("img_id" or "image_id")'
                    )
                img_id = _norm_id(img_id)
                if img_id not in self._refs:
                    raise ValueError(
                        f'CaptionMetric: image id {img_id!r} has no caption '
                        f'in ann_file "{self.ann_file}"'
                    )
                self.results.append(dict(pred=pred, img_id=img_id))
                continue
            refs = _get(sample, 'gt_caption')
            if isinstance(refs, str):
                refs = [refs]
            if (
                not isinstance(refs, (list, tuple))
                or len(refs) == 0
                or not all(isinstance(r, str) for r in refs)
            ):
                raise ValueError(
                    'CaptionMetric: each data sample needs "gt_caption" (a '
                    'string or a non-empty list of strings) unless the '
                    f'metric has an ann_file, got {refs!r}'
                )
            self.results.append(dict(pred=pred, refs=list(refs)))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Tokenize and score all collected captions.

        Args:
            results: What :meth:`process` kept, from all ranks.

        Returns:
            dict: ``BLEU-1`` .. ``BLEU-4``, ``CIDEr-D`` (unprefixed).
        """
        if len(results) == 0:
            raise ValueError('CaptionMetric: no data samples were processed')
        Bleu, Cider = _coco_scorers()
        gts: Dict[Hashable, List[str]] = {}
        res: Dict[Hashable, List[str]] = {}
        for i, result in enumerate(results):
            if 'img_id' in result:
                key = result['img_id']
                if key in res:  # a repeated image is scored once
                    continue
                refs = self._refs[key]
            else:
                key, refs = i, result['refs']
            res[key] = [ptb_tokenize(result['pred'])]
            gts[key] = [ptb_tokenize(ref) for ref in refs]
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        metrics = {f'BLEU-{n + 1}': float(b) for n, b in enumerate(bleu)}
        if any(ref for refs in gts.values() for ref in refs):
            cider, _ = Cider().compute_score(gts, res)
        else:  # pycocoevalcap fails without a single reference n-gram
            cider = 0.0
        metrics['CIDEr-D'] = float(cider)
        return metrics
