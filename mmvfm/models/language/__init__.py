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
from .caption_head import CaptionDecoderLayer, CaptionHead
from .captions import one_caption_each, sample_captions
from .decoding import (
    beam_search,
    expand_cache,
    gnmt_length_penalty,
    greedy_search,
    map_cache,
    reorder_cache,
)
from .lazy_tokenizer import LazyTokenizerMixin
from .text_transformer import TextTransformer

__all__ = [
    'one_caption_each',
    'sample_captions',
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
    'CaptionDecoderLayer',
    'CaptionHead',
    'LazyTokenizerMixin',
    'beam_search',
    'expand_cache',
    'gnmt_length_penalty',
    'greedy_search',
    'map_cache',
    'reorder_cache',
]
