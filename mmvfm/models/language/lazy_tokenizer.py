# Copyright (c) mmvfm contributors. All rights reserved.
"""The ``tokenizer`` of a model with a text side, read from its file at first
use.

Models build without the tokenizer file: on the meta device, in tests and
tools that only build a config, and before the toy set's first use has trained
it. The file is read when the first text is encoded or decoded. CLIP,
Uni-Perceiver v2 and :class:`CaptionHead` share this one property; each checks
its config against its own text side at build.
"""

from typing import Optional

from mmdet.registry import TASK_UTILS

from .bpe_tokenizer import BPETokenizer


class LazyTokenizerMixin:
    """Adds ``self.tokenizer``, built from ``self.tokenizer_cfg`` on first use.

    A subclass sets ``tokenizer_cfg`` (a ``TASK_UTILS`` config such as
    ``dict(type='BPETokenizer', file=..., vocab_size=...)``, or ``None``) in
    its ``__init__``. Errors name the owning class and the file.
    """

    tokenizer_cfg: Optional[dict] = None
    _tokenizer: Optional[BPETokenizer] = None

    @property
    def tokenizer(self) -> BPETokenizer:
        """The tokenizer, built on first use.

        Raises:
            RuntimeError: the model has no tokenizer config.
            FileNotFoundError / ValueError naming the file: the file is
                missing, or not an mmvfm tokenizer of the config's
                ``vocab_size``.
        """
        if self._tokenizer is None:
            owner = type(self).__name__
            if self.tokenizer_cfg is None:
                raise RuntimeError(
                    f'{owner}: no tokenizer config (tokenizer=dict('
                    "type='BPETokenizer', file=..., vocab_size=...)) to "
                    'encode / decode texts'
                )
            try:
                self._tokenizer = TASK_UTILS.build(self.tokenizer_cfg)
            except (FileNotFoundError, ValueError) as e:
                raise type(e)(f'{owner}: {e}') from None
        return self._tokenizer
