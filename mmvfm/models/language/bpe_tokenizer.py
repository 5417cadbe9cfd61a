# Copyright (c) mmvfm contributors. All rights reserved.
"""A byte-level BPE tokenizer trained from captions, one file, offline.

Built on HF ``tokenizers`` (Rust; trains in seconds) and nothing else: no
hub, no download, ever. The file is the ``tokenizers`` JSON of a byte-level
BPE (lower-cased, NFC) whose first ids are mmvfm's special tokens, reserved
when it is trained so that the vocabulary never changes afterwards:

=====  ==========  ==============================================
 id     token       use
=====  ==========  ==============================================
 0      ``<pad>``   padding (masked out)
 1      ``<bos>``   begins every encoded text
 2      ``<eos>``   ends it (the text feature of a causal encoder)
 3      ``<mask>``  masked-token objectives
 4      ``<unk>``   never produced by byte-level BPE; reserved
 5      ``<spe>``   Uni-Perceiver v2's special token of the decoder
=====  ==========  ==============================================

Configs carry ``vocab_size`` and build without the file (models are built
on the meta device in the tests); the file is needed to encode. A file
whose vocabulary size differs from the config's, or that lacks these
tokens at these ids (a foreign tokenizer), is refused naming the file.
Texts longer than ``max_length`` tokens (with ``<bos>``/``<eos>``) are
truncated, with one warning per process.

Train one from any COCO captions file::

    python tools/misc/train_tokenizer.py \\
        data/toy_coco/annotations/captions_train.json \\
        data/toy_coco/bpe_512.json --vocab-size 512
"""

import json
import os.path as osp
import warnings
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import TASK_UTILS
from torch import Tensor

SPECIAL_TOKENS = ('<pad>', '<bos>', '<eos>', '<mask>', '<unk>', '<spe>')
PAD, BOS, EOS, MASK, UNK, SPE = range(len(SPECIAL_TOKENS))
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the specials
_warned_truncation = False


def _require_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError as e:  # pragma: no cover - a runtime requirement
        raise ImportError(
            "mmvfm's tokenizer needs HF `tokenizers` "
            '(pip install -r requirements/runtime.txt)'
        ) from e


def train_bpe(
    texts: Iterable[str],
    out_file: str,
    vocab_size: int = 512,
    min_frequency: int = 2,
) -> int:
    """Train a byte-level BPE on ``texts`` and save it to ``out_file``.

    When the texts hold fewer merges than ``vocab_size`` asks for, the
    vocabulary is padded with reserved tokens ``<unused{i}>`` (special: never
    produced from ordinary text, dropped by ``decode``), so that the file
    always has exactly ``vocab_size`` ids and a config's ``vocab_size`` is
    the one it was trained with.

    Returns:
        int: the vocabulary size of the file, ``vocab_size``.

    Raises:
        ValueError: no non-empty text, or ``vocab_size`` below the byte
            alphabet plus the special tokens.
    """
    _require_tokenizers()
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f'vocab_size {vocab_size}: a byte-level BPE needs at least '
            f'{MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)'
        )
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError('train_bpe: no non-empty text to train on')
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    missing = vocab_size - tok.get_vocab_size()
    if missing > 0:
        tok.add_special_tokens([f'<unused{i}>' for i in range(missing)])
    tok.save(out_file)
    return tok.get_vocab_size()


def coco_captions(captions_file: str) -> List[str]:
    """The captions of a COCO captions file (``annotations[*].caption``).

    Raises:
        FileNotFoundError / ValueError naming the file: missing, not a COCO
        captions file, or without any non-empty caption.
    """
    if not osp.isfile(captions_file):
        raise FileNotFoundError(
            f'captions file "{captions_file}" does not exist'
        )
    try:
        with open(captions_file) as f:
            data = json.load(f)
        captions = [a['caption'] for a in data['annotations']]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f'"{captions_file}" is not a COCO captions file '
            f'(annotations[*].caption): {e!r}'
        ) from None
    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError(f'"{captions_file}" holds no non-empty caption')
    return captions


@TASK_UTILS.register_module()
class BPETokenizer:
    """Encode / decode texts with a file of :func:`train_bpe`.

    Args:
        file (str): the tokenizer file.
        vocab_size (int, optional): the config's; checked against the file.
        max_length (int): tokens per text including ``<bos>``/``<eos>``.
    """

    def __init__(
        self, file: str, vocab_size: Optional[int] = None, max_length: int = 32
    ) -> None:
        _require_tokenizers()
        from tokenizers import Tokenizer

        if not osp.isfile(file):
            raise FileNotFoundError(
                f'tokenizer file "{file}" does not exist; train one with '
                'tools/misc/train_tokenizer.py CAPTIONS_JSON OUT.json'
            )
        try:
            self._tok = Tokenizer.from_file(file)
        except Exception as e:
            raise ValueError(
                f'"{file}" is not a tokenizers file: {e}'
            ) from None
        for i, token in enumerate(SPECIAL_TOKENS):
            if self._tok.token_to_id(token) != i:
                raise ValueError(
                    f'"{file}" is not an mmvfm tokenizer: {token!r} is not '
                    f'id {i} (got {self._tok.token_to_id(token)}); train one '
                    'with tools/misc/train_tokenizer.py'
                )
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise ValueError(
                f'tokenizer "{file}" has {self.vocab_size} tokens, the '
                f'config says vocab_size={vocab_size}'
            )
        if max_length < 3:
            raise ValueError(f'max_length must be >= 3, got {max_length}')
        self.file = file
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def tokenize(self, text: str) -> List[int]:
        """Ids of ``text`` without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode(
        self, texts: Sequence[str], max_length: Optional[int] = None
    ) -> Tuple[Tensor, Tensor]:
        """``<bos> text <eos>``, truncated to ``max_length`` (one warning
        per process) and padded with ``<pad>``.

        Returns:
            tuple: ids (N, L) int64 and a mask (N, L) bool, True at real
            tokens; ``L`` is the longest encoded text.
        """
        global _warned_truncation
        max_length = max_length or self.max_length
        rows = []
        for text in texts:
            ids = self.tokenize(text)
            if len(ids) > max_length - 2:
                if not _warned_truncation:
                    _warned_truncation = True
                    warnings.warn(
                        f'BPETokenizer: a text of {len(ids) + 2} tokens was '
                        f'truncated to max_length={max_length} (warned '
                        'once)',
                        stacklevel=2,
                    )
                ids = ids[: max_length - 2]
            rows.append([BOS, *ids, EOS])
        length = max((len(r) for r in rows), default=2)
        out = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row)
        return out, out != PAD

    def decode(self, ids) -> List[str]:
        """Texts of ids (N, L) (or one sequence): special tokens dropped,
        stopped at the first ``<eos>`` after the first token."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        if ids and isinstance(ids[0], int):
            ids = [ids]
        texts = []
        for row in ids:
            kept = []
            for i, t in enumerate(row):
                if t == EOS and i > 0:
                    break
                if t >= len(SPECIAL_TOKENS):
                    kept.append(t)
            texts.append(self._tok.decode(kept).strip())
        return texts
