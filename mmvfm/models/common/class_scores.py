# Copyright (c) mmvfm contributors. All rights reserved.
"""Writing a classification prediction into a data sample."""

from torch import Tensor


def set_class_scores(sample, scores: Tensor) -> None:
    """Store one image's class scores and their argmax in ``sample``.

    Args:
        sample: an mmpretrain ``DataSample`` (``set_pred_score`` /
            ``set_pred_label``, what ``mmpretrain.Accuracy`` reads) or any
            mmengine data element (``pred_score`` / ``pred_label`` fields).
        scores (Tensor): (num_classes,) probabilities.
    """
    if hasattr(sample, 'set_pred_score'):  # mmpretrain DataSample
        sample.set_pred_score(scores)
        sample.set_pred_label(scores.argmax())
    else:
        sample.set_field(scores, 'pred_score')
        sample.set_field(scores.argmax(), 'pred_label')
