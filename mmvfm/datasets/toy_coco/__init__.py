# Copyright (c) mmvfm contributors. All rights reserved.
"""A deterministic toy dataset in COCO format.

:func:`generate_toy_coco` draws small images of coloured shapes on a
textured background and writes, for a ``train`` and a ``val`` split:

* ``annotations/instances_{split}.json``: COCO instances (boxes, polygon
  masks, areas) plus the extra keys ``color``, ``size`` and ``position``
  on each annotation;
* ``annotations/captions_{split}.json``: COCO captions, several different
  references per image, each naming every object of the image;
* ``annotations/classification_{split}.json``: OpenMMLab 2.0 annotation
  file with the dominant class (largest total mask area) as ``gt_label``;
* ``annotations/multilabel_{split}.json``: the same with the sorted list
  of classes present as ``gt_label``;
* ``classes.txt`` and the PNG images ``{split}/{image_id:06d}.png``.

With ``domain='ood'`` it writes an out-of-domain set of the same classes
and formats in new colours, backgrounds and object styles (see
:func:`generate_toy_coco`).

Every shape is a polygon. The pixels of an object are exactly the mask
that pycocotools rasterises from the polygon stored in the json, so the
masks, areas and images agree pixel for pixel. (``cv2.fillPoly`` uses
another rasterisation rule and differs on about 8 % of the pixels of a
small circle, which is why it is not used for painting.)

The modules, by concern:

* :mod:`.common`: class names, splits, domains, size and position words
  and argument helpers;
* :mod:`.geometry`: shape polygons, rotation, placement and clash checks;
* :mod:`.painting`: colours, backgrounds, object styles, rasterisation
  and the drawing of one image;
* :mod:`.captions`: caption templates, synonyms, position/size words;
* :mod:`.writing`: the COCO/OpenMMLab json writers and
  :func:`generate_toy_coco`;
* :mod:`.verification`: :func:`verify_toy_coco`.

The package only needs the standard library, numpy, OpenCV and
pycocotools; mmengine is imported lazily for the optional progress bar.
"""

from .common import POSITIONS as POSITIONS
from .common import SIZE_WORDS as SIZE_WORDS
from .common import TOY_CLASSES, TOY_PALETTE, TOY_SPLITS
from .common import TOY_DOMAINS as TOY_DOMAINS
from .common import FloatPair as FloatPair
from .common import IntPair as IntPair
from .painting import OOD_BACKGROUNDS as OOD_BACKGROUNDS
from .painting import OOD_STYLES as OOD_STYLES
from .painting import TOY_COLORS
from .painting import TOY_OOD_COLORS as TOY_OOD_COLORS
from .verification import verify_toy_coco
from .writing import generate_toy_coco

# the names of the former single module ``toy_coco.py``; the out-of-domain
# names (TOY_DOMAINS, TOY_OOD_COLORS, OOD_BACKGROUNDS, OOD_STYLES) are
# importable from here too
__all__ = [
    'TOY_CLASSES',
    'TOY_COLORS',
    'TOY_PALETTE',
    'TOY_SPLITS',
    'generate_toy_coco',
    'verify_toy_coco',
]
