# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2's candidate sets: each candidate ``g(f(text))``, the
same encoders and decoder as the inputs.

- class names (classification, detection, instance segmentation):
  ``g(f(template.format(name)))``, encoded every step (the text side is
  trained jointly), :func:`class_candidates`;
- the vocabulary (captioning): each word as the text ``<bos> word``, the
  special tokens but ``<eos>`` excluded, :func:`word_ids` /
  :func:`vocab_candidates`;
- which of them carry gradient, and in what chunks: :func:`encode`.
"""

from typing import Callable, List, Optional

import torch
from torch import Tensor

from ..language.bpe_tokenizer import BOS, EOS, SPECIAL_TOKENS
from .task_agnostic_decoder import TEXT_TYPE


def encode(
    fn: Callable[[Tensor], Tensor],
    num: int,
    cfg: dict,
    device: torch.device,
    targets: Optional[Tensor] = None,
) -> Tensor:
    """All ``num`` candidates ``fn(index) -> (len(index), dims)``.

    With the task config's ``grad_candidates = G`` while gradients are on,
    every candidate is computed (the likelihood stays over the whole set)
    but only G of them with gradient -- the ``targets`` (candidate indices
    of this batch), then others drawn at random -- and the rest without,
    ``candidate_chunk`` at a time (OURS, for memory: 30k words or 1000
    ImageNet names through the text encoder and the decoder with gradient
    do not fit). ``None`` (default): all with gradient. Without gradients
    (evaluation) the candidates are chunked.
    """
    index = torch.arange(num, device=device)
    chunk = cfg['candidate_chunk']
    grad = cfg['grad_candidates']
    if torch.is_grad_enabled() and (grad is None or grad >= num):
        return fn(index)

    def chunked() -> Tensor:
        return torch.cat(
            [fn(index[i : i + chunk]) for i in range(0, num, chunk)]
        )

    if not torch.is_grad_enabled():
        return chunked()
    chosen = torch.zeros(num, dtype=torch.bool, device=device)
    if targets is not None and targets.numel():
        chosen[targets.reshape(-1).to(device)] = True
    others = index[~chosen]
    extra = max(grad - int(chosen.sum()), 0)
    perm = torch.randperm(len(others), device=device)[:extra]
    chosen[others[perm]] = True
    with torch.no_grad():
        out = chunked()
    picked = index[chosen]
    return out.index_put((picked,), fn(picked))


def class_texts(task: str, cfg: dict, tokenizer) -> List[str]:
    """The class-name texts of a task (its ``template``), each checked to
    fit the tokenizer's ``max_length`` (a name that does not would be
    truncated into another name)."""
    texts = [cfg['template'].format(c) for c in cfg['classes']]
    limit = tokenizer.max_length
    for name, text in zip(cfg['classes'], texts):
        n = len(tokenizer.tokenize(text)) + 2
        if n > limit:
            raise ValueError(
                f'tasks.{task}: class {name!r} ({text!r}) is {n} tokens '
                f'with <bos>/<eos>, the tokenizer keeps {limit}: it '
                'cannot be encoded whole'
            )
    return texts


def class_candidates(
    model, task: str, targets: Optional[Tensor] = None
) -> Tensor:
    """The class-name candidates (K, dims) of ``task`` (``targets``: the
    batch's labels, for ``grad_candidates``)."""
    texts = class_texts(task, model.task_cfgs[task], model.tokenizer)
    return model._candidates(
        lambda i: model.represent_texts([texts[j] for j in i], task),
        len(texts),
        task,
        targets,
    )


def word_ids(vocab_size: int, device: torch.device) -> Tensor:
    """The vocabulary ids that are caption candidates (V',): every id but
    the special tokens other than ``<eos>`` (``<pad>``, ``<bos>``,
    ``<mask>``, ``<unk>``, ``<spe>``), in training and generation."""
    banned = {i for i in range(len(SPECIAL_TOKENS)) if i != EOS}
    return torch.tensor(
        [i for i in range(vocab_size) if i not in banned], device=device
    )


def vocab_candidates(
    model,
    task: str,
    targets: Optional[Tensor] = None,
    words: Optional[Tensor] = None,
) -> Tensor:
    """Each candidate word's ``g(f(word))`` (V', dims), in the order of
    ``words`` (default :func:`word_ids`): the word as the text
    ``<bos> word`` through the text encoder and the decoder (``targets``:
    the batch's candidate indices, for ``grad_candidates``)."""
    if words is None:
        words = model.word_ids()
    ids = torch.stack([torch.full_like(words, BOS), words], dim=1)
    modality = torch.full((2,), TEXT_TYPE, device=ids.device)

    def fn(index: Tensor) -> Tensor:
        tokens = model.text_tokens(ids[index])
        return model.decoder.represent(
            tokens, modality, model.task_index[task]
        )

    return model._candidates(fn, len(words), task, targets)
