# Copyright (c) mmvfm contributors. All rights reserved.
"""The BPE tokenizer: trained and used with every socket blocked (offline
proof), special ids, round trips, truncation warned once, and errors that
name the file."""

import json
import socket
import warnings

import pytest
from conftest import load_tool

from mmvfm.models.language import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    BPETokenizer,
    train_bpe,
)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f'the text path tried to connect to {address}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket.socket, 'connect_ex', refuse)


@pytest.fixture
def tokenizer_file(toy_root, tmp_path, no_network):
    out = str(tmp_path / 'bpe.json')
    size = load_tool('misc/train_tokenizer.py').main(
        [
            f'{toy_root}/annotations/captions_train.json',
            out,
            '--vocab-size',
            '300',
        ]
    )
    assert 262 <= size <= 300
    return out, size


def test_offline_train_encode_decode(tokenizer_file, no_network):
    path, size = tokenizer_file
    tok = BPETokenizer(path, vocab_size=size, max_length=64)
    texts = ['A small red circle at the top left.', 'two Squares']
    ids, mask = tok.encode(texts)
    assert ids.dtype.is_floating_point is False and ids.shape[0] == 2
    assert (ids[:, 0] == BOS).all()
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert row[n - 1] == EOS and (row[n:] == PAD).all()
        assert m[:n].all() and not m[n:].any()
    assert tok.decode(ids) == [t.lower() for t in texts]
    assert ids.max() < size


def test_truncation_warns_once(tokenizer_file):
    import mmvfm.models.language.bpe_tokenizer as module

    path, _ = tokenizer_file
    module._warned_truncation = False
    tok = BPETokenizer(path, max_length=5)
    long = 'a big blue ring at the bottom right and a cross'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ids, _ = tok.encode([long, long])
        tok.encode([long])
    assert ids.shape == (2, 5) and (ids[:, -1] == EOS).all()
    assert sum('truncated' in str(w.message) for w in caught) == 1


def test_special_tokens_are_the_first_ids(tokenizer_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_file[0])
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(
        range(len(SPECIAL_TOKENS))
    )


def test_errors_name_the_file(tokenizer_file, tmp_path):
    path, size = tokenizer_file
    with pytest.raises(
        ValueError, match=f'has {size} tokens, the config says'
    ):
        BPETokenizer(path, vocab_size=size + 1)
    with pytest.raises(
        FileNotFoundError, match='missing.json" does not exist'
    ):
        BPETokenizer(str(tmp_path / 'missing.json'))
    not_tok = tmp_path / 'other.json'
    not_tok.write_text('{"a": 1}')
    with pytest.raises(ValueError, match='other.json" is not a tokenizers'):
        BPETokenizer(str(not_tok))
    # a foreign tokenizer: trained without our special tokens
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    foreign = Tokenizer(models.BPE())
    foreign.pre_tokenizer = pre_tokenizers.ByteLevel()
    foreign.train_from_iterator(
        ['a red circle'] * 10,
        trainers.BpeTrainer(
            vocab_size=300,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    foreign.save(str(tmp_path / 'foreign.json'))
    with pytest.raises(ValueError, match="not an mmvfm tokenizer: '<pad>'"):
        BPETokenizer(str(tmp_path / 'foreign.json'))
    empty = tmp_path / 'captions_empty.json'
    empty.write_text(json.dumps({'annotations': [{'caption': '  '}]}))
    tool = load_tool('misc/train_tokenizer.py')
    with pytest.raises(SystemExit, match='holds no non-empty caption'):
        tool.main([str(empty), str(tmp_path / 'x.json')])
    with pytest.raises(SystemExit, match='is not a COCO captions file'):
        tool.main([str(not_tok), str(tmp_path / 'x.json')])
    with pytest.raises(ValueError, match='needs at least 262'):
        train_bpe(['a b c'], str(tmp_path / 'y.json'), vocab_size=100)


def test_vocabulary_padded_to_the_asked_size(tmp_path):
    """Few merges in the texts: reserved tokens pad the file to exactly
    ``vocab_size`` ids, which ``decode`` drops."""
    path = str(tmp_path / 'small.json')
    assert train_bpe(['a red circle'] * 5, path, vocab_size=400) == 400
    tok = BPETokenizer(path, vocab_size=400)
    ids, _ = tok.encode(['a red circle'])
    assert int(ids.max()) < 300  # ordinary text never uses the padding
    assert tok.decode([[BOS, *ids[0, 1:-1].tolist(), 399, EOS]]) == [
        'a red circle'
    ]
