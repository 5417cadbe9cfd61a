# Copyright (c) mmvfm contributors. All rights reserved.
"""Class-name prompts for zero-shot classification.

A class's text embedding is the ensemble of its prompts (Radford et al.,
2021, Sec. 3.1.4): every template filled with the class name, each encoded
and L2-normalised, averaged, and normalised again.
"""

from typing import List, Sequence

# a few generic templates; the toy config adds its own
DEFAULT_TEMPLATES = (
    'a photo of a {}.',
    'a picture of a {}.',
    'an image showing a {}.',
)


def check_templates(templates: Sequence[str]) -> List[str]:
    """Templates as a list; each must hold exactly one ``{}``.

    Raises:
        ValueError: no template, or one without exactly one ``{}`` (named).
    """
    templates = list(templates)
    if not templates:
        raise ValueError('zero_shot.templates: at least one template')
    for t in templates:
        if not isinstance(t, str) or t.count('{}') != 1:
            raise ValueError(
                f'zero_shot.templates: {t!r} must be a string with exactly '
                'one "{}" (the class name)'
            )
    return templates


def class_prompts(
    classes: Sequence[str],
    templates: Sequence[str],
    tokenize,
    max_length: int,
) -> List[str]:
    """All prompts, class-major: ``len(classes) * len(templates)`` texts.

    Args:
        classes: class names.
        templates: prompt templates with one ``{}``.
        tokenize: ``text -> list of ids`` without special tokens.
        max_length: tokens per text including ``<bos>``/``<eos>``.

    Raises:
        ValueError: an empty class name, a repeated one, or a prompt that
            would be truncated (two classes could then share a prompt), each
            naming the class.
    """
    templates = check_templates(templates)
    if not classes:
        raise ValueError('zero_shot.classes: no class names')
    seen = set()
    prompts = []
    for i, name in enumerate(classes):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f'zero_shot.classes[{i}]: empty class name {name!r}'
            )
        if name in seen:
            raise ValueError(f'zero_shot.classes: {name!r} appears twice')
        seen.add(name)
        for t in templates:
            text = t.format(name)
            n = len(tokenize(text)) + 2
            if n > max_length:
                raise ValueError(
                    f'zero_shot.classes[{i}] {name!r}: the prompt {text!r} '
                    f'is {n} tokens, over max_length={max_length} (shorten '
                    'the name or the template, or raise max_length)'
                )
            prompts.append(text)
    return prompts
