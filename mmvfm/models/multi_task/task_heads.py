# Copyright (c) mmvfm contributors. All rights reserved.
"""Task heads of :class:`MultiTaskModel`: each wraps a head of mmdet or
mmpretrain (and an optional neck) behind one interface.

A task head takes the shared features (a tuple of maps) and its task's data
samples:

- ``loss(feats, data_samples) -> dict`` of losses;
- ``predict(feats, data_samples) -> list`` of data samples with
  predictions, as the task's evaluator expects them;
- ``forward(feats)``: raw outputs;
- ``uses_collective`` (bool): whether the head communicates across ranks
  (e.g. gathers features for a contrastive loss); the multi-task train loop
  refuses such heads under the ``mixed`` strategy.
"""

from typing import Dict, List, Optional, Tuple

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor


class _TaskHead(BaseModule):
    """A neck (optional) and a head, built from configs (their own
    ``init_cfg``s apply through ``init_weights``).

    ``uses_collective=None`` keeps the class's declaration; a config sets
    it when the wrapped head gathers across ranks in its loss.
    """

    uses_collective = False

    def __init__(
        self,
        head: dict,
        neck: Optional[dict] = None,
        uses_collective: Optional[bool] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if uses_collective is not None:
            self.uses_collective = bool(uses_collective)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.head = MODELS.build(head)

    def _feats(self, feats: Tuple[Tensor]) -> Tuple[Tensor]:
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, feats: Tuple[Tensor]):
        return self.head(self._feats(feats))

    def check_inputs(self, feats: Tuple[Tensor]) -> None:
        """Run what the head does first on the features (its neck and
        forward), so that a channel mismatch fails at build time."""
        self.head(self._feats(feats))

    def loss(self, feats: Tuple[Tensor], data_samples: list) -> Dict:
        return self.head.loss(self._feats(feats), data_samples)


@MODELS.register_module()
class DetTaskHead(_TaskHead):
    """Detection: an mmdet neck (e.g. FPN) and a dense head (RetinaHead,
    FCOSHead, ...). ``predict`` rescales to the original image and puts
    ``pred_instances`` into the ``DetDataSample``s, as mmdet's detectors
    do, for ``CocoMetric``.

    Args:
        head (dict): the dense head config.
        neck (dict, optional): the neck config.
        uses_collective (bool, optional): the head's loss communicates
            across ranks.
    """

    def predict(
        self, feats: Tuple[Tensor], data_samples: list, rescale: bool = True
    ) -> List:
        results = self.head.predict(
            self._feats(feats), data_samples, rescale=rescale
        )
        for sample, pred in zip(data_samples, results):
            sample.pred_instances = pred
        return data_samples


@MODELS.register_module()
class ClsTaskHead(_TaskHead):
    """Classification: an mmpretrain neck (e.g. ``GlobalAveragePooling``)
    and head (``LinearClsHead``, ``MultiLabelLinearClsHead``, ...); its
    ``predict`` returns mmpretrain ``DataSample``s for ``Accuracy``.

    Args:
        head (dict): e.g. ``dict(type='mmpretrain.LinearClsHead', ...)``.
        neck (dict, optional): e.g.
            ``dict(type='mmpretrain.GlobalAveragePooling')``.
        uses_collective (bool, optional): the head's loss communicates
            across ranks.
    """

    def predict(self, feats: Tuple[Tensor], data_samples: list) -> List:
        return self.head.predict(self._feats(feats), data_samples)


@MODELS.register_module()
class FeaturePassThrough(BaseModule):
    """The backbone of a :class:`DetectorTaskHead`'s detector: returns the
    (shared) features it is given, so that the detector's own
    ``extract_feat`` runs only its neck."""

    def forward(self, feats):
        return tuple(feats) if isinstance(feats, (list, tuple)) else feats


@MODELS.register_module()
class DetectorTaskHead(BaseModule):
    """Any mmdet detector after the shared trunk: DETR-family detectors
    (DETR, Deformable DETR, DINO, ...: their transformer and bbox head),
    Mask2Former / MaskFormer (pixel decoder, transformer decoder and
    ``MaskFormerFusionHead`` for instance results), two-stage detectors.

    The detector is mmdet's own class, built from its config with the
    backbone replaced by :class:`FeaturePassThrough`; ``loss`` and
    ``predict`` are the detector's, called with the shared features in
    place of the images (``extract_feat`` then runs the detector's neck,
    e.g. a ``ChannelMapper``, on them). Predictions are ``DetDataSample``s
    with ``pred_instances`` (boxes, scores, labels and, for Mask2Former,
    masks) rescaled to the original image, for ``CocoMetric``.

    Args:
        detector (dict): the mmdet detector config, without a backbone
            (the trunk is the ``MultiTaskModel``'s).
        uses_collective (bool): the detector's loss communicates across
            ranks.
        init_cfg (dict, optional): initialisation config.
    """

    uses_collective = False

    def __init__(
        self,
        detector: dict,
        uses_collective: bool = False,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        detector = dict(detector)
        if detector.get('backbone') not in (None, {}):
            raise ValueError(
                'DetectorTaskHead: detector.backbone must be unset: the '
                "MultiTaskModel's backbone (and neck) is the trunk, got "
                f'{detector["backbone"]}'
            )
        detector['backbone'] = dict(type='FeaturePassThrough')
        detector.pop('data_preprocessor', None)  # the MultiTaskModel's
        self.uses_collective = bool(uses_collective)
        self.detector = MODELS.build(detector)

    def forward(self, feats: Tuple[Tensor], data_samples=None):
        return self.detector(feats, data_samples, mode='tensor')

    def check_inputs(self, feats: Tuple[Tensor]) -> None:
        """Run the detector's ``extract_feat`` (its neck) on the features,
        so that a channel mismatch fails at build time."""
        self.detector.extract_feat(feats)

    def loss(self, feats: Tuple[Tensor], data_samples: list) -> Dict:
        return self.detector.loss(feats, data_samples)

    def predict(
        self, feats: Tuple[Tensor], data_samples: list, rescale: bool = True
    ) -> List:
        return self.detector.predict(feats, data_samples, rescale=rescale)
