# Copyright (c) mmvfm contributors. All rights reserved.
from .bpe_tokenizer import (
    BOS,
    EOS,
    MASK,
    PAD,
    SPE,
    SPECIAL_TOKENS,
    BPETokenizer,
    coco_captions,
    train_bpe,
)
from .text_transformer import TextTransformer

__all__ = [
    'BOS',
    'EOS',
    'MASK',
    'PAD',
    'SPE',
    'SPECIAL_TOKENS',
    'BPETokenizer',
    'coco_captions',
    'train_bpe',
    'TextTransformer',
]
