# Copyright (c) mmvfm contributors. All rights reserved.
"""The one lazy ``tokenizer`` property of CLIP, Uni-Perceiver v2 and the
caption head: nothing read at build, built once on first use, and errors
naming the owner and the file."""

import pytest

from mmvfm.models.language import coco_captions, train_bpe
from mmvfm.models.language.lazy_tokenizer import LazyTokenizerMixin


class _Owner(LazyTokenizerMixin):
    def __init__(self, cfg):
        self.tokenizer_cfg = cfg


@pytest.fixture(scope='module')
def tokenizer_file(toy_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('tok') / 'bpe.json')
    train_bpe(
        coco_captions(f'{toy_root}/annotations/captions_train.json'),
        out,
        vocab_size=300,
    )
    return out


def test_built_once_on_first_use(tokenizer_file):
    owner = _Owner(dict(type='BPETokenizer', file=tokenizer_file))
    assert owner._tokenizer is None  # nothing read at build
    tok = owner.tokenizer
    assert tok.vocab_size == 300 and tok.file == tokenizer_file
    assert owner.tokenizer is tok


def test_errors_name_owner_and_file(tmp_path, tokenizer_file):
    with pytest.raises(RuntimeError, match='_Owner: no tokenizer config'):
        _ = _Owner(None).tokenizer
    missing = str(tmp_path / 'missing.json')
    owner = _Owner(dict(type='BPETokenizer', file=missing))
    with pytest.raises(
        FileNotFoundError,
        match='_Owner: tokenizer file .*missing.json" does not exist',
    ):
        _ = owner.tokenizer
    owner = _Owner(
        dict(type='BPETokenizer', file=tokenizer_file, vocab_size=301)
    )
    with pytest.raises(
        ValueError,
        match='_Owner: tokenizer .* has 300 '
        'tokens, the config says vocab_size=301',
    ):
        _ = owner.tokenizer
