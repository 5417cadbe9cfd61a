# Copyright (c) mmvfm contributors. All rights reserved.
"""One real training iteration of any config, on toy images.

A config that builds can still crash at its first step (a ``_delete_``
key that survives into ``clip_grad_norm_``, a hook that reaches into the
wrong module, a loss that is ``inf`` on an untrained teacher). A smoke run
takes the config as it is -- its pipelines, input size, model, optimizer,
hooks and train loop -- and changes only what a machine without COCO and
without the internet needs:

- **data**: every dataset of the config reads a generated toy set
  (:func:`mmvfm.datasets.generate_toy_coco`). A dataset whose annotation
  file the toy set has (the toy configs) reads it unchanged; any other
  COCO-format dataset (``CocoDataset`` and its subclasses: the COCO
  configs) gets a COCO-format file at the config's own relative paths
  (``annotations/instances_train2017.json``, ``train2017/``) whose
  categories are the dataset's own classes (80 for COCO), the five toy
  shapes mapped onto five of them spread over the label range;
- **weights**: every ``Pretrained`` ``init_cfg`` dropped, ``load_from``
  off, a distiller's teacher untrained (``allow_untrained_teacher``: it is
  initialised by its own ``init_cfg``); every ``score_thr`` of the model
  0, so that the test pass evaluates an untrained model's predictions;
- **tokenizers**: every ``BPETokenizer`` of the model reads a tokenizer
  trained from the toy captions with the config's ``vocab_size`` (the
  tokenizer's own, else its sibling text encoder's), never a file of the
  config;
- **schedule**: exactly one training iteration (an iteration-based loop
  stops after one; an epoch-based one runs one epoch over one batch; a
  multi-task loop runs until each task has trained once, its task draws
  seeded (``train_cfg.seed``, unless the config sets one) so that this
  takes as few iterations as the ratios allow),
  validation off, no data workers, a log line per iteration, a checkpoint
  only when asked for (:func:`smoke_config` ``checkpoint=True``);
- **scale** (optional): ``scale < 1`` multiplies every spatial size of the
  pipelines and batch augments (``scale``, ``scales``, ``img_scale``,
  ``crop_size``, ``border``, ``size``, ``random_size_range``), for a
  cheaper run that keeps the config's multi-level structure.

``tools/misc/smoke_run.py`` writes the smoke config, trains it with
``tools/train.py``, reads the iteration's losses (:func:`smoke_losses`) and,
if asked, evaluates its checkpoint with ``tools/test.py``;
``tests/test_configs/test_config_smoke_runs.py`` runs it on every shipped
config.
"""

import copy
import json
import math
import os
import os.path as osp
import shutil
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from mmvfm.utils import drop_pretrained

__all__ = [
    'SPATIAL_KEYS',
    'bad_losses',
    'iter_leaf_datasets',
    'make_smoke_data',
    'smoke_config',
    'smoke_losses',
]

# pipeline / batch-augment keys whose int values are pixel sizes
SPATIAL_KEYS = (
    'scale',
    'scales',
    'img_scale',
    'crop_size',
    'border',
    'size',
    'random_size_range',
)
# dataset wrappers: the keys that hold the wrapped dataset(s)
_WRAPPED = ('dataset', 'datasets')
_SPLITS = ('train', 'val', 'test')


def make_smoke_data(root: str, num_images: int = 8, seed: int = 0) -> str:
    """Generate (once) the toy set that smoke runs read: ``num_images``
    train and val images of the toy set's own size (112-128 px).

    Returns:
        str: ``root``.
    """
    from mmvfm.datasets import generate_toy_coco

    if not osp.isfile(osp.join(root, 'annotations', 'instances_val.json')):
        generate_toy_coco(
            root,
            num_train=num_images,
            num_val=num_images,
            num_captions=3,
            seed=seed,
            overwrite=True,
        )
    return root


def iter_leaf_datasets(dataset: dict) -> Iterator[dict]:
    """The dataset configs inside ``dataset``: itself, or those inside its
    wrappers (``MultiImageMixDataset``, ``RepeatDataset``,
    ``ConcatDataset``, ...), depth first."""
    wrapped = [k for k in _WRAPPED if k in dataset]
    if not wrapped:
        yield dataset
        return
    for key in wrapped:
        inner = dataset[key]
        for d in inner if isinstance(inner, (list, tuple)) else [inner]:
            yield from iter_leaf_datasets(d)


def _loaders(cfg: Config, split: str) -> List[dict]:
    """The ``{split}_dataloader`` configs: one, or one per task of a
    multi-task config (``dict(task=loader, ...)``)."""
    loaders = cfg.get(f'{split}_dataloader')
    if not loaders:
        return []
    return [loaders] if 'dataset' in loaders else list(loaders.values())


def _dataset_classes(dataset: dict) -> Optional[Tuple[str, ...]]:
    """The class names a dataset config declares (``metainfo.classes``)
    or its registered class's ``METAINFO`` has; None without any."""
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return tuple(metainfo['classes'])
    from mmdet.registry import DATASETS

    try:
        dataset_cls = DATASETS.get(dataset['type'])
    except KeyError:
        return None
    if dataset_cls is None:
        return None
    classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
    return tuple(classes) if classes else None


def _is_captions_dataset(dataset: dict) -> bool:
    """Whether a dataset config reads a COCO *captions* file (its
    registered class is :class:`~mmvfm.datasets.CocoImageCaptionsDataset`
    or a subclass)."""
    from mmdet.registry import DATASETS

    from mmvfm.datasets import CocoImageCaptionsDataset

    try:
        dataset_cls = DATASETS.get(dataset['type'])
    except KeyError:
        return False
    return isinstance(dataset_cls, type) and issubclass(
        dataset_cls, CocoImageCaptionsDataset
    )


def _is_list_file_dataset(dataset: dict) -> bool:
    """Whether a dataset config is an mmpretrain ``CustomDataset`` (e.g.
    ``ImageNet``) reading a ``.txt`` list of ``path label`` lines."""
    from mmdet.registry import DATASETS

    try:
        dataset_cls = DATASETS.get(dataset['type'])
    except KeyError:
        return False
    try:
        from mmpretrain.datasets import CustomDataset
    except ImportError:  # pragma: no cover - mmpretrain is a dependency
        return False
    return (
        isinstance(dataset_cls, type)
        and issubclass(dataset_cls, CustomDataset)
        and str(dataset.get('ann_file', '')).endswith('.txt')
    )


def _list_file_for_classes(
    toy_cls: str, toy_root: str, out_ann: str, img_dir: str, classes
) -> None:
    """Write the toy classification set (OpenMMLab 2.0 json ``toy_cls``) as
    an mmpretrain list file ``out_ann`` (``file label`` lines, files
    relative to ``img_dir``, copied there), toy label k of 5 mapped to class
    ``round(k * (K - 1) / 4)`` of ``classes``."""
    with open(toy_cls) as f:
        data = json.load(f)
    num = len(classes)
    toy_num = max(len(data['metainfo']['classes']) - 1, 1)
    os.makedirs(img_dir, exist_ok=True)
    lines = []
    for item in data['data_list']:
        name = osp.basename(item['img_path'])
        shutil.copyfile(
            osp.join(toy_root, item['img_path']), osp.join(img_dir, name)
        )
        label = round(int(item['gt_label']) * (num - 1) / toy_num)
        lines.append(f'{name} {label}')
    os.makedirs(osp.dirname(out_ann), exist_ok=True)
    with open(out_ann, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _copy_images(coco: dict, toy_root: str, img_dir: str) -> None:
    """Copy the images of a toy COCO dict into ``img_dir``, in place
    (``file_name`` = the base name)."""
    os.makedirs(img_dir, exist_ok=True)
    for img in coco['images']:
        src = osp.join(toy_root, img['file_name'])
        img['file_name'] = osp.basename(img['file_name'])
        shutil.copyfile(src, osp.join(img_dir, img['file_name']))


def _coco_captions(
    toy_ann: str, toy_root: str, out_ann: str, img_dir: str
) -> None:
    """Write the toy captions file ``toy_ann`` at ``out_ann``, its images
    copied into ``img_dir`` (``file_name`` = the base name)."""
    with open(toy_ann) as f:
        coco = json.load(f)
    _copy_images(coco, toy_root, img_dir)
    os.makedirs(osp.dirname(out_ann), exist_ok=True)
    with open(out_ann, 'w') as f:
        json.dump(coco, f)


def _coco_for_classes(
    toy_ann: str, toy_root: str, out_ann: str, img_dir: str, classes
) -> None:
    """Write the toy instances file ``toy_ann`` as a COCO file at
    ``out_ann`` whose categories are ``classes`` (ids 1..K), its images
    copied into ``img_dir`` (``file_name`` = the base name).

    Toy shape k of 5 becomes class ``round(k * (K - 1) / 4)``: the first
    and the last label are both used.
    """
    with open(toy_ann) as f:
        coco = json.load(f)
    num = len(classes)
    toy_ids = sorted(c['id'] for c in coco['categories'])
    spread = max(len(toy_ids) - 1, 1)
    to_class = {
        cid: round(k * (num - 1) / spread) + 1 for k, cid in enumerate(toy_ids)
    }
    _copy_images(coco, toy_root, img_dir)
    for ann in coco['annotations']:
        ann['category_id'] = to_class[ann['category_id']]
    coco['categories'] = [
        dict(id=i + 1, name=name, supercategory='smoke')
        for i, name in enumerate(classes)
    ]
    os.makedirs(osp.dirname(out_ann), exist_ok=True)
    with open(out_ann, 'w') as f:
        json.dump(coco, f)


def _point_at_toy_data(
    dataset: dict, split: str, toy_root: str, out_root: str
) -> Tuple[str, str, str, str]:
    """Rewrite one leaf dataset config, in place, to read the toy images.

    Returns:
        (old ann_file path, new ann_file path, old data_root, new data_root),
        for rewriting evaluators' paths.
    """
    old_root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file') or ''
    if not ann_file:
        raise ValueError(
            f'{split}_dataloader: dataset {dataset.get("type")!r} has no '
            'ann_file; a smoke run knows only annotation-file datasets'
        )
    rel_ann = ann_file
    if osp.isabs(ann_file):
        rel_ann = osp.relpath(ann_file, old_root)
    if osp.isfile(osp.join(toy_root, rel_ann)):
        # a toy-set config: its files exist in the toy set
        dataset['data_root'] = toy_root
        dataset['ann_file'] = rel_ann
        return (
            osp.join(old_root, ann_file),
            osp.join(toy_root, rel_ann),
            old_root,
            toy_root,
        )
    prefix = dataset.get('data_prefix') or {}
    img_prefix = (
        prefix.get('img', prefix.get('img_path', ''))
        if isinstance(prefix, dict)
        else prefix
    )
    toy_split = 'train' if split == 'train' else 'val'
    out_ann = osp.join(out_root, rel_ann)
    captions = _is_captions_dataset(dataset)
    classes = None if captions else _dataset_classes(dataset)
    if not captions and classes is None:
        raise ValueError(
            f'{split}_dataloader: dataset {dataset.get("type")!r} '
            f'({ann_file}) declares no classes (metainfo.classes or '
            'METAINFO) to write a COCO-format toy file for'
        )
    img_dir = osp.join(out_root, img_prefix or toy_split)
    if _is_list_file_dataset(dataset):
        if not osp.isfile(out_ann):
            _list_file_for_classes(
                osp.join(
                    toy_root, 'annotations', f'classification_{toy_split}.json'
                ),
                toy_root,
                out_ann,
                img_dir,
                classes,
            )
        dataset['data_root'] = out_root
        dataset['ann_file'] = rel_ann
        if not img_prefix:
            dataset['data_prefix'] = toy_split
        return osp.join(old_root, ann_file), out_ann, old_root, out_root
    if not osp.isfile(out_ann) and captions:
        _coco_captions(
            osp.join(toy_root, 'annotations', f'captions_{toy_split}.json'),
            toy_root,
            out_ann,
            img_dir,
        )
        if not img_prefix:  # file names relative to the data root
            _prefix_file_names(out_ann, toy_split)
    elif not osp.isfile(out_ann):
        _coco_for_classes(
            osp.join(toy_root, 'annotations', f'instances_{toy_split}.json'),
            toy_root,
            out_ann,
            img_dir,
            classes,
        )
        if not img_prefix:  # file names relative to the data root
            _prefix_file_names(out_ann, toy_split)
    dataset['data_root'] = out_root
    dataset['ann_file'] = rel_ann
    return osp.join(old_root, ann_file), out_ann, old_root, out_root


def _point_at_toy_tokenizer(node: Any, data_root: str) -> None:
    """Every ``BPETokenizer`` config under ``node`` -> a tokenizer trained
    from the toy captions, its ``vocab_size`` that of the config (the
    tokenizer's, else a sibling's ``vocab_size``), in place."""
    if isinstance(node, (list, tuple)):
        for value in node:
            _point_at_toy_tokenizer(value, data_root)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if isinstance(value, dict) and str(value.get('type', '')).endswith(
            'BPETokenizer'
        ):
            vocab = value.get('vocab_size') or next(
                (
                    v['vocab_size']
                    for v in node.values()
                    if isinstance(v, dict) and 'vocab_size' in v
                ),
                node.get('vocab_size'),
            )
            if not vocab:
                raise ValueError(
                    f'{key}: a BPETokenizer without vocab_size, and none '
                    'beside it, to train a smoke tokenizer for'
                )
            out = osp.join(data_root, f'smoke_tokenizer_{vocab}.json')
            if not osp.isfile(out):
                from mmvfm.models.language import coco_captions, train_bpe

                captions = osp.join(
                    data_root, 'annotations', 'captions_train.json'
                )
                train_bpe(coco_captions(captions), out, vocab_size=vocab)
            value['file'] = out
        else:
            _point_at_toy_tokenizer(value, data_root)


def _prefix_file_names(ann_file: str, folder: str) -> None:
    with open(ann_file) as f:
        coco = json.load(f)
    for img in coco['images']:
        img['file_name'] = f'{folder}/{img["file_name"]}'
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


def _rewrite_paths(
    node: Any, files: Dict[str, str], roots: Dict[str, str]
) -> None:
    """Evaluator ``ann_file``s, in place: a file a dataset of the config
    reads -> that dataset's smoke file (``files``); another file under one
    of the config's old data roots -> the same file under the first smoke
    data root of that old root (``roots``). A path already rewritten (a
    dict that ``val_evaluator`` and ``test_evaluator`` share) is left."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'ann_file' and isinstance(value, str):
                if value in files.values():
                    continue
                if osp.normpath(value) in files:
                    node[key] = files[osp.normpath(value)]
                    continue
                for old, new in roots.items():
                    if old and value.startswith(old):
                        node[key] = osp.join(new, value[len(old) :])
                        break
            else:
                _rewrite_paths(value, files, roots)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _rewrite_paths(value, files, roots)


def _scale_sizes(node: Any, factor: float) -> Any:
    """Every int under a :data:`SPATIAL_KEYS` key times ``factor``
    (rounded, at least 1 in magnitude), in place for dicts/lists."""

    def scale(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value != 0:
            size = max(1, round(abs(value) * factor))
            return size if value > 0 else -size
        if isinstance(value, (list, tuple)):
            return type(value)(scale(v) for v in value)
        return value

    if isinstance(node, dict):
        for key, value in node.items():
            if key in SPATIAL_KEYS:
                node[key] = scale(value)
            else:
                _scale_sizes(value, factor)
    elif isinstance(node, list):
        for value in node:
            _scale_sizes(value, factor)
    return node


def _zero_score_thresholds(node: Any) -> None:
    """Every ``score_thr`` in a model config -> 0, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'score_thr':
                node[key] = 0.0
            else:
                _zero_score_thresholds(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _zero_score_thresholds(value)


def _iters_to_train_each_task(
    train_cfg: dict, seed: int
) -> Tuple[int, Optional[int]]:
    """1, or for a multi-task loop (``task_ratios``) the number of
    iterations after which its task draws have trained every task.

    Returns:
        (iterations, task-draw seed): without a ``train_cfg.seed`` of the
        config, the seed (``seed`` or the next ones, up to 100) whose draws
        train every task soonest -- one iteration per task for most ratios
        (ViSFT's 0.4 / 0.3 / 0.3 draws need 8 with seed 0); None for a
        single-task loop.
    """
    ratios = train_cfg.get('task_ratios')
    if not ratios:
        return 1, None
    from mmvfm.engine.runner import TaskSampler

    fixed = train_cfg.get('seed', None)
    candidates = [fixed] if fixed is not None else range(seed, seed + 100)
    best = None
    for draw_seed in candidates:
        sampler = TaskSampler(
            dict(ratios), train_cfg.get('strategy', 'unmixed'), draw_seed
        )
        seen = set()
        for it in range(10_000):
            seen.add(sampler.task_at(it))
            if len(seen) == len(sampler.tasks):
                if best is None or it + 1 < best[0]:
                    best = (it + 1, draw_seed)
                break
        if best is not None and best[0] == len(sampler.tasks):
            break
    if best is None:
        raise ValueError(
            f'train_cfg.task_ratios {dict(ratios)}: some task is not drawn '
            'in 10000 iterations'
        )
    return best


def _is_epoch_based(train_cfg: dict) -> bool:
    loop = str(train_cfg.get('type', ''))
    if loop:
        return 'Epoch' in loop
    return 'max_epochs' in train_cfg or train_cfg.get('by_epoch', False)


def smoke_config(
    cfg: Config,
    data_root: str,
    work_dir: str,
    scale: float = 1.0,
    batch_size: Optional[int] = None,
    checkpoint: bool = False,
    name: Optional[str] = None,
    seed: int = 0,
) -> Config:
    """A copy of ``cfg`` made a one-iteration smoke run (module doc).

    Args:
        cfg: the config as loaded (``Config.fromfile``).
        data_root: the toy set of :func:`make_smoke_data`; COCO-format
            files for other class lists are written under
            ``data_root/smoke_<dataset type>/``.
        work_dir: the run's work dir.
        scale: factor on the pipelines' spatial sizes (1: the config's own).
        batch_size: images per iteration (default: the config's).
        checkpoint: save a checkpoint after the iteration (for a test pass).
        name: experiment and visualizer name (default: the work dir's).
        seed: ``randomness.seed``.

    Returns:
        Config: the smoke-run config; ``cfg`` is not changed.
    """
    cfg = copy.deepcopy(cfg)
    name = name or osp.basename(osp.normpath(work_dir))
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    if 'visualizer' in cfg:
        # mmdet's visualizer is a named global instance
        cfg.visualizer.name = name
    cfg.randomness = dict(seed=seed)
    cfg.load_from = None
    cfg.resume = False

    # ---- weights: nothing downloaded, untrained teachers ---------------
    drop_pretrained(cfg.model)
    _zero_score_thresholds(cfg.model)
    if 'teacher' in cfg.model:
        cfg.model.teacher_ckpt = None
        cfg.model.allow_untrained_teacher = True
    _point_at_toy_tokenizer(cfg.model, data_root)

    # ---- data: the toy images at the config's own relative paths -------
    files: Dict[str, str] = {}
    roots: Dict[str, str] = {}
    for split in _SPLITS:
        for loader in _loaders(cfg, split):
            loader.num_workers = 0
            loader.persistent_workers = False
            if batch_size is not None and split == 'train':
                loader.batch_size = batch_size
            for dataset in iter_leaf_datasets(loader.dataset):
                out_root = osp.join(data_root, f'smoke_{dataset["type"]}')
                old_file, new_file, old, new = _point_at_toy_data(
                    dataset, split, data_root, out_root
                )
                files[osp.normpath(old_file)] = new_file
                roots.setdefault(old, new)
                if split == 'train':
                    # one batch: an epoch-based loop runs one iteration
                    dataset['indices'] = loader.batch_size
    for split in ('val', 'test'):
        _rewrite_paths(cfg.get(f'{split}_evaluator'), files, roots)
    if scale != 1.0:
        for split in _SPLITS:
            for loader in _loaders(cfg, split):
                _scale_sizes(loader.dataset, scale)
        preprocessor = cfg.model.get('data_preprocessor') or {}
        _scale_sizes(preprocessor, scale)
        student = cfg.model.get('student')
        if isinstance(student, dict):
            _scale_sizes(student.get('data_preprocessor') or {}, scale)

    # ---- schedule: one iteration, no validation ------------------------
    epoch_based = _is_epoch_based(cfg.train_cfg)
    if epoch_based:
        cfg.train_cfg.max_epochs = 1
    else:
        iters, draw_seed = _iters_to_train_each_task(cfg.train_cfg, seed)
        cfg.train_cfg.max_iters = iters
        if draw_seed is not None:
            cfg.train_cfg.seed = draw_seed
    cfg.train_cfg.val_interval = 10**9
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    hooks = cfg.setdefault('default_hooks', ConfigDict())
    if 'logger' in hooks:
        hooks.logger.interval = 1
    hooks.checkpoint = dict(
        type='AtomicCheckpointHook',
        by_epoch=epoch_based,
        interval=1 if checkpoint else -1,
        save_last=checkpoint,
        max_keep_ckpts=1,
    )
    return cfg


def smoke_losses(runner) -> Dict[str, float]:
    """The losses of the last logged iteration of ``runner``, and
    ``iters``."""
    out: Dict[str, float] = {}
    for key, buffer in runner.message_hub.log_scalars.items():
        if key.startswith('train/') and 'loss' in key:
            out[key[len('train/') :]] = float(buffer.current())
    out['iters'] = runner.iter
    return out


def bad_losses(
    losses: Dict[str, float], bound: float = 1e3
) -> Sequence[Tuple[str, float]]:
    """The ``(name, value)`` of each loss that is not finite or whose
    magnitude exceeds ``bound``."""
    return [
        (k, v)
        for k, v in losses.items()
        if k != 'iters' and not (math.isfinite(v) and abs(v) <= bound)
    ]
