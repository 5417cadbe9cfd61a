# Copyright (c) mmvfm contributors. All rights reserved.
from .caption_metric import CaptionMetric
from .caption_tokenizer import (
    PTB_ABBREVIATIONS,
    PTB_PUNCTUATIONS,
    ptb_tokenize,
    ptb_tokens,
    tokenize_captions,
)
from .retrieval_metric import RetrievalMetric, retrieval_recall

__all__ = [
    'PTB_ABBREVIATIONS',
    'PTB_PUNCTUATIONS',
    'CaptionMetric',
    'RetrievalMetric',
    'ptb_tokenize',
    'ptb_tokens',
    'retrieval_recall',
    'tokenize_captions',
]
