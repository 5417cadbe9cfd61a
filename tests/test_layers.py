# Copyright (c) mmvfm contributors. All rights reserved.
"""mmvfm's layer order, read from every module's imports (AST, no import).

A module may import mmvfm modules of its own top-level package or of a lower
tier. ``EXCEPTIONS`` lists the few imports that go upwards, each with its
reason; they must be imports inside a function (so importing the lower
package never imports the higher one), and an exception nobody needs any more
fails too. Private names (``_x``) are imported only inside their own package
(directory).
"""

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Set, Tuple

import mmvfm

ROOT = Path(mmvfm.__file__).parent

# lowest first; a module imports mmvfm packages of a strictly lower tier only
TIERS = (
    ('version', '_ext'),
    ('fileio', 'ops'),
    ('utils',),
    ('compat', 'datasets', 'evaluation'),
    ('models',),
    ('engine',),
    ('testing',),
    ('',),  # mmvfm/__init__.py
)
TIER = {pkg: i for i, names in enumerate(TIERS) for pkg in names}

# (importing module, imported module prefix): why it goes upwards
EXCEPTIONS = {
    ('mmvfm.utils.setup_env', 'mmvfm.datasets'): 'register_all_modules',
    ('mmvfm.utils.setup_env', 'mmvfm.engine'): 'register_all_modules',
    ('mmvfm.utils.setup_env', 'mmvfm.evaluation'): 'register_all_modules',
    ('mmvfm.utils.setup_env', 'mmvfm.models'): 'register_all_modules',
    # the toy set's first use trains a toy config's BPE tokenizer
    ('mmvfm.datasets.toy_coco.first_use', 'mmvfm.models.language'): 'toy',
}

# (module, its package, imported module, names, inside a function, line)
Import = Tuple[str, str, str, List[str], bool, int]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _imports(path: Path) -> Iterator[Import]:
    module = _module_name(path)
    package = (
        module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    )
    tree = ast.parse(path.read_text(), str(path))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        local = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield module, package, alias.name, [], local, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[: len(base) - node.level + 1]
                target = '.'.join(
                    base + ([node.module] if node.module else [])
                )
            else:
                target = node.module or ''
            names = [a.name for a in node.names]
            yield module, package, target, names, local, node.lineno


def _all_imports() -> List[Import]:
    return [
        imp
        for path in sorted(ROOT.rglob('*.py'))
        for imp in _imports(path)
        if imp[2] == 'mmvfm' or imp[2].startswith('mmvfm.')
    ]


def _top(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def _targets(target: str, names: List[str]) -> List[str]:
    # ``from mmvfm import models`` imports mmvfm.models
    if target == 'mmvfm':
        return [f'mmvfm.{n}' for n in names]
    return [target]


def _exception(module: str, target: str) -> Optional[Tuple[str, str]]:
    for src, prefix in EXCEPTIONS:
        if module == src and (
            target == prefix or target.startswith(prefix + '.')
        ):
            return src, prefix
    return None


def _upward(imports: List[Import]) -> Tuple[List[str], Set[Tuple[str, str]]]:
    """The imports against the order, and the exceptions used."""
    wrong, used = [], set()
    for module, _, target, names, local, line in imports:
        src = _top(module)
        for dst_module in _targets(target, names):
            dst = _top(dst_module)
            if dst == src or TIER[dst] < TIER[src]:
                continue
            key = _exception(module, dst_module)
            if key is not None and local:
                used.add(key)
                continue
            wrong.append(
                f'{module}:{line} imports {dst_module} ({dst!r}, tier '
                f'{TIER[dst]} >= {src!r}, tier {TIER[src]})'
                + (' at module level' if key is not None else '')
            )
    return wrong, used


def _private(imports: List[Import]) -> List[str]:
    """Private names imported from outside the importer's package."""
    wrong = []
    for module, package, target, names, _, line in imports:
        inside = target == package or target.startswith(package + '.')
        for name in names:
            if (
                name.startswith('_')
                and not name.startswith('__')
                and not inside
            ):
                wrong.append(f'{module}:{line} imports {target}.{name}')
    return wrong


def test_every_package_has_a_tier():
    packages = {
        p.name.split('.')[0]
        for p in ROOT.iterdir()
        if (p.is_dir() and (p / '__init__.py').exists())
        or p.suffix in ('.py', '.so', '.pyd')
    }
    packages.discard('__init__')
    assert packages - set(TIER) == set(), 'give the new package a tier'


def test_layer_order():
    wrong, used = _upward(_all_imports())
    assert wrong == []
    assert set(EXCEPTIONS) - used == set(), 'exceptions nobody needs'


def test_private_names_stay_in_their_package():
    assert _private(_all_imports()) == []


def test_the_checks_see_what_they_forbid():
    fake = [
        # models -> engine, at module level
        (
            'mmvfm.models.clip.clip_model',
            'mmvfm.models.clip',
            'mmvfm.engine.hooks',
            ['AtomicCheckpointHook'],
            False,
            3,
        ),
        # ops -> models, inside a function
        (
            'mmvfm.ops.similar_attention',
            'mmvfm.ops',
            'mmvfm.models',
            [],
            True,
            4,
        ),
        # a declared exception, but at module level
        ('mmvfm.utils.setup_env', 'mmvfm.utils', 'mmvfm.models', [], False, 5),
        # allowed: downwards, and a declared exception inside a function
        (
            'mmvfm.models.sia.sia_attention',
            'mmvfm.models.sia',
            'mmvfm.ops',
            ['similar_attention'],
            False,
            6,
        ),
        ('mmvfm.utils.setup_env', 'mmvfm.utils', 'mmvfm.engine', [], True, 7),
    ]
    wrong, used = _upward(fake)
    assert [w.split(' ')[0] for w in wrong] == [
        'mmvfm.models.clip.clip_model:3',
        'mmvfm.ops.similar_attention:4',
        'mmvfm.utils.setup_env:5',
    ]
    assert wrong[2].endswith('at module level')
    assert used == {('mmvfm.utils.setup_env', 'mmvfm.engine')}
    assert _private(
        [
            (
                'mmvfm.datasets.toy_coco.first_use',
                'mmvfm.datasets.toy_coco',
                'mmvfm.utils.data_check',
                ['_dataset_cfgs'],
                False,
                8,
            ),
            (
                'mmvfm.datasets.toy_coco.writing',
                'mmvfm.datasets.toy_coco',
                'mmvfm.datasets.toy_coco.common',
                ['_VERSION'],
                False,
                9,
            ),
        ]
    ) == [
        'mmvfm.datasets.toy_coco.first_use:8 imports '
        'mmvfm.utils.data_check._dataset_cfgs'
    ]
