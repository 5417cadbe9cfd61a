# Copyright (c) mmvfm contributors. All rights reserved.
"""Image-text retrieval recall (R@k, both directions) from embeddings."""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement
from torch import Tensor

# rows of the similarity matrix compared at once (bounds the temporaries
# to chunk x N_txt)
_CHUNK = 1024


def _check_topk(topk: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    topk = (topk,) if isinstance(topk, int) else tuple(topk)
    if len(topk) == 0 or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in topk
    ):
        raise ValueError(f'topk must be positive ints, got {topk!r}')
    return topk


@torch.no_grad()
def retrieval_recall(
    sim: Tensor,
    txt_to_img: Tensor,
    topk: Union[int, Sequence[int]] = (1, 5, 10),
) -> Dict[str, float]:
    """Recall@k of image->text and text->image retrieval, in percent.

    * image->text ``i2t_R@k``: % of images whose best-ranked ground-truth
      text (any of its captions) is among the k most similar texts;
    * text->image ``t2i_R@k``: % of texts whose image is among the k most
      similar images;
    * ``R_mean``: the mean of all the recalls above.

    Ties are resolved pessimistically: a wrong candidate with the same
    score as the ground truth ranks before it (the rank of a ground truth
    is the number of wrong candidates scoring >= it), so constant
    similarities give the worst recall, not the best. For i2t, only wrong
    texts count: other captions of the same image never push the best one
    down.

    A k at least as large as the number of candidates (N_img for t2i,
    N_txt - K_i + 1 for image i) gives R@k = 100: every candidate is in
    the top k. This is not an error; :class:`RetrievalMetric` logs a
    warning.

    Args:
        sim: (N_img, N_txt) similarities, larger is more similar; any
            float dtype (compared as given), finite.
        txt_to_img: (N_txt,) integer index of each text's image; every
            image needs at least one text.
        topk: The k of R@k.

    Returns:
        dict[str, float]: ``i2t_R@{k}`` for each k, then ``t2i_R@{k}``,
        then ``R_mean``.
    """
    topk = _check_topk(topk)
    if not isinstance(sim, Tensor) or sim.dim() != 2:
        raise ValueError(
            'sim must be a 2-D tensor (N_img, N_txt), got '
            f'{getattr(sim, "shape", type(sim).__name__)}'
        )
    if not sim.is_floating_point():
        raise ValueError(f'sim must be a float tensor, got {sim.dtype}')
    n_img, n_txt = sim.shape
    if n_img == 0 or n_txt == 0:
        raise ValueError(f'sim is empty: {tuple(sim.shape)}')
    if not isinstance(txt_to_img, Tensor) or txt_to_img.shape != (n_txt,):
        raise ValueError(
            f'txt_to_img must be a ({n_txt},) tensor (one image index per '
            f'column of sim), got {getattr(txt_to_img, "shape", None)}'
        )
    if txt_to_img.is_floating_point() or txt_to_img.dtype == torch.bool:
        raise ValueError(
            f'txt_to_img must be an integer tensor, got {txt_to_img.dtype}'
        )
    txt_to_img = txt_to_img.to(device=sim.device, dtype=torch.long)
    if txt_to_img.min() < 0 or txt_to_img.max() >= n_img:
        raise ValueError(
            f'txt_to_img values must be in [0, {n_img}), got '
            f'[{int(txt_to_img.min())}, {int(txt_to_img.max())}]'
        )
    no_text = torch.nonzero(
        torch.bincount(txt_to_img, minlength=n_img) == 0
    ).flatten()
    if len(no_text) > 0:
        raise ValueError(
            f'{len(no_text)} image(s) have no text, e.g. image '
            f'{no_text[:5].tolist()}: image->text recall is undefined'
        )
    if not torch.isfinite(sim).all():
        raise ValueError('sim has NaN or infinite values')

    arange_txt = torch.arange(n_txt, device=sim.device)
    gt_txt = sim[txt_to_img, arange_txt]  # (N_txt,) score of each text's img
    rank_t2i = torch.zeros(n_txt, dtype=torch.long, device=sim.device)
    rank_i2t = torch.empty(n_img, dtype=torch.long, device=sim.device)
    for start in range(0, n_img, _CHUNK):
        rows = sim[start : start + _CHUNK]  # (c, N_txt)
        img_idx = torch.arange(start, start + len(rows), device=sim.device)
        is_gt = txt_to_img[None, :] == img_idx[:, None]  # (c, N_txt)
        # t2i: images scoring >= the text's own image (itself included)
        rank_t2i += (rows >= gt_txt[None, :]).sum(0)
        # i2t: wrong texts scoring >= the image's best ground-truth text
        best = rows.masked_fill(~is_gt, float('-inf')).amax(1)  # (c,)
        rank_i2t[start : start + len(rows)] = (
            (rows >= best[:, None]) & ~is_gt
        ).sum(1)
    rank_t2i -= 1  # the text's own image

    metrics: Dict[str, float] = {}
    for name, rank in (('i2t', rank_i2t), ('t2i', rank_t2i)):
        for k in topk:
            metrics[f'{name}_R@{k}'] = (rank < k).double().mean().item() * 100
    metrics['R_mean'] = sum(metrics.values()) / len(metrics)
    return metrics


def _as_cpu_tensor(value: Any, field: str) -> Tensor:
    if value is None:
        raise ValueError(f'RetrievalMetric: a data sample has no "{field}"')
    value = torch.as_tensor(value).detach().cpu()
    if not value.is_floating_point():
        raise ValueError(
            f'RetrievalMetric: "{field}" must be a float tensor, got '
            f'{value.dtype}'
        )
    return value


@METRICS.register_module()
class RetrievalMetric(BaseMetric):
    """Image-text retrieval R@k in both directions, several texts per image.

    Each data sample is one image with ``img_embed`` (D,) and the
    embeddings of its own captions ``text_embeds`` (K_i, D), K_i >= 1 and
    may vary between images (a (D,) tensor counts as one caption). After
    all batches (and ranks), the images (N_img, D) and texts (N_txt, D)
    are stacked in float64, compared by cosine similarity
    (``normalize=True``) or dot product, and scored by
    :func:`retrieval_recall` (pessimistic ties; R@k = 100 when k is at
    least the number of candidates, with a warning).

    Args:
        topk: The k of R@k.
        normalize: L2-normalise the embeddings first (cosine similarity).
        collect_device: ``'cpu'`` or ``'gpu'``, for collecting results
            across ranks.
        prefix: Prefix of the metric names; defaults to ``'retrieval'``.
        collect_dir: Directory for collecting results across ranks.

    Returns from :meth:`evaluate`, in percent:
        ``{prefix}/i2t_R@{k}``, ``{prefix}/t2i_R@{k}`` for each k and
        ``{prefix}/R_mean`` (the mean of those).
    """

    default_prefix: Optional[str] = 'retrieval'

    def __init__(
        self,
        topk: Union[int, Sequence[int]] = (1, 5, 10),
        normalize: bool = True,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir,
        )
        self.topk = _check_topk(topk)
        self.normalize = normalize

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Keep each sample's embeddings as CPU tensors.

        Args:
            data_batch: Unused.
            data_samples: Dicts or ``BaseDataElement``s with ``img_embed``
                (D,) and ``text_embeds`` (K_i, D).
        """
        for sample in data_samples:
            if not isinstance(sample, (dict, BaseDataElement)):
                raise TypeError(
                    'data samples must be dicts or BaseDataElements, got '
                    f'{type(sample).__name__}'
                )
            img = _as_cpu_tensor(sample.get('img_embed'), 'img_embed')
            txt = _as_cpu_tensor(sample.get('text_embeds'), 'text_embeds')
            if txt.dim() == 1:
                txt = txt[None]
            if img.dim() != 1 or txt.dim() != 2 or len(txt) == 0:
                raise ValueError(
                    'RetrievalMetric: expected "img_embed" (D,) and '
                    '"text_embeds" (K, D) with K >= 1, got '
                    f'{tuple(img.shape)} and {tuple(txt.shape)}'
                )
            if txt.shape[1] != img.shape[0]:
                raise ValueError(
                    'RetrievalMetric: "img_embed" and "text_embeds" differ '
                    f'in size: {tuple(img.shape)} vs {tuple(txt.shape)}'
                )
            self.results.append(dict(img_embed=img, text_embeds=txt))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Stack all embeddings and compute the recalls.

        Args:
            results: What :meth:`process` kept, from all ranks.

        Returns:
            dict: ``i2t_R@{k}``, ``t2i_R@{k}``, ``R_mean`` (unprefixed).
        """
        if len(results) == 0:
            raise ValueError('RetrievalMetric: no data samples were processed')
        dims = {int(r['img_embed'].shape[0]) for r in results}
        if len(dims) != 1:
            raise ValueError(
                f'RetrievalMetric: embedding sizes differ: {sorted(dims)}'
            )
        with torch.no_grad():
            img = torch.stack([r['img_embed'] for r in results]).double()
            txt = torch.cat([r['text_embeds'] for r in results]).double()
            counts = torch.tensor([len(r['text_embeds']) for r in results])
            txt_to_img = torch.repeat_interleave(
                torch.arange(len(results)), counts
            )
            if self.normalize:
                img = F.normalize(img, dim=1)
                txt = F.normalize(txt, dim=1)
            sim = img @ txt.T  # (N_img, N_txt)
        n_cand = min(len(img), len(txt) - int(counts.max()) + 1)
        if max(self.topk) >= n_cand:
            print_log(
                f'RetrievalMetric: R@{max(self.topk)} with only {len(img)} '
                f'images and {len(txt)} texts: R@k is 100 whenever k is at '
                'least the number of candidates',
                logger='current',
                level=logging.WARNING,
            )
        return retrieval_recall(sim, txt_to_img, self.topk)
