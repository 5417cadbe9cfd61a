# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's task configs: ``tasks=dict(name=dict(type=...))``.

``type`` names a task type of :data:`UNIPERCEIVER_TASKS` (the classes of
:mod:`.tasks`, registered under their type names). :func:`check_task`
fills and checks the keys every task has (``loss_weight``,
``grad_candidates``, ``candidate_chunk``), then hands the config to its
type's ``check_cfg``; the helpers here are those several task types share:
positive ints, and class names as candidates (:func:`check_classes`,
:func:`check_dataset_classes`).
"""

from typing import Dict, List, Sequence, Tuple

from mmengine.registry import Registry

#: task type name -> task type class (``tasks.<name>.type``)
UNIPERCEIVER_TASKS = Registry('Uni-Perceiver v2 task type')
SYNONYMS = ('all', 'first')


def task_types() -> Tuple[str, ...]:
    """The registered task type names, in registration order."""
    return tuple(UNIPERCEIVER_TASKS.module_dict)


def check_task(name: str, cfg: dict) -> dict:
    """The checked config of task ``name`` (a copy, defaults filled)."""
    cfg = dict(cfg)
    kind = cfg.get('type')
    if kind not in task_types():
        raise ValueError(
            f'tasks.{name}.type must be one of {task_types()}, got {kind!r}'
        )
    cfg.setdefault('loss_weight', 1.0)
    cfg.setdefault('grad_candidates', None)
    cfg.setdefault('candidate_chunk', 1024)
    check_positive_ints(name, cfg, ('grad_candidates', 'candidate_chunk'))
    return UNIPERCEIVER_TASKS.get(kind).check_cfg(name, cfg)


def check_positive_ints(name: str, cfg: dict, keys: Sequence[str]) -> None:
    """Each of ``cfg[keys]`` is None or a positive int."""
    for key in keys:
        value = cfg[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(
                f'tasks.{name}.{key} must be a positive int, got {value!r}'
            )


def check_classes(name: str, cfg: dict) -> None:
    """A task whose candidates are class names: ``classes`` (a list, or a
    registered dataset type whose ``METAINFO`` classes to take),
    ``synonyms`` and ``template`` checked, ``cfg['classes']`` the final
    candidate names."""
    classes = cfg.get('classes')
    synonyms = cfg.setdefault('synonyms', 'all')
    if synonyms not in SYNONYMS:
        raise ValueError(
            f'tasks.{name}.synonyms must be one of {SYNONYMS}, got '
            f'{synonyms!r}'
        )
    if isinstance(classes, str):  # a registered dataset's class names
        classes = candidate_names(dataset_classes(name, classes), synonyms)
    elif classes and synonyms == 'first':
        classes = candidate_names(classes, synonyms)
    if not classes:
        raise ValueError(
            f'tasks.{name}.classes: an empty class list (the '
            'classification candidates)'
        )
    bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f'tasks.{name}.classes: empty names {bad}')
    dup = sorted({c for c in classes if list(classes).count(c) > 1})
    if dup:
        raise ValueError(f'tasks.{name}.classes: repeated names {dup}')
    template = cfg.setdefault('template', '{}')
    if '{}' not in template:
        raise ValueError(
            f'tasks.{name}.template {template!r} has no {{}} for the '
            'class name'
        )
    cfg['classes'] = list(classes)


def candidate_names(classes: Sequence[str], synonyms: str) -> List[str]:
    """A dataset's class names as candidates: all of each name, or its
    first synonym (ImageNet's 'great white shark, white shark, man-eater,
    ...' -> 'great white shark'), then a name the list repeats (ImageNet's
    'crane', bird and machine) numbered from its second occurrence on
    ('crane (2)'), as candidates must differ."""
    if synonyms == 'first':
        classes = [c.split(',')[0].strip() for c in classes]
    return numbered(classes)


def dataset_classes(task: str, dataset: str) -> List[str]:
    """The ``METAINFO['classes']`` of a registered dataset type (e.g.
    ``'CocoDataset'``, ``'mmpretrain.ImageNet'``)."""
    from mmdet.registry import DATASETS

    try:
        dataset_cls = DATASETS.get(dataset)
    except KeyError:
        dataset_cls = None
    classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
    if not classes:
        raise ValueError(
            f'tasks.{task}.classes={dataset!r}: no registered dataset of '
            'that type with METAINFO classes (give a list of names, or a '
            "dataset type such as 'CocoDataset' or 'mmpretrain.ImageNet')"
        )
    return list(classes)


def numbered(classes: Sequence[str]) -> List[str]:
    """``classes`` with each repeated name numbered from its second
    occurrence on (``'crane'``, ``'crane (2)'``)."""
    seen: Dict[str, int] = {}
    names = []
    for c in classes:
        seen[c] = seen.get(c, 0) + 1
        names.append(c if seen[c] == 1 else f'{c} ({seen[c]})')
    return names


def check_dataset_classes(task: str, cfg: dict, metainfo: dict) -> None:
    """A task's dataset declares the task's candidate class names, in the
    same order (its labels index them). Tasks without ``classes`` and
    datasets that declare none pass; a name the dataset repeats is
    compared numbered ('crane (2)')."""
    if 'classes' not in cfg:
        return
    declared = (metainfo or {}).get('classes')
    if not declared:
        return
    # as the candidates were made from a dataset's names
    declared = candidate_names(list(declared), cfg['synonyms'])
    want = cfg['classes']
    if declared == want:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(declared, want)) if a != b),
        min(len(declared), len(want)),
    )

    def at(names):
        return repr(names[first]) if first < len(names) else 'none'

    raise ValueError(
        f'task {task!r}: the dataset declares {len(declared)} classes, '
        f'tasks.{task}.classes (the candidates its labels index) has '
        f'{len(want)}; first difference at index {first}: dataset '
        f'{at(declared)}, candidates {at(want)}. They must be the same '
        'list in the same order'
    )
