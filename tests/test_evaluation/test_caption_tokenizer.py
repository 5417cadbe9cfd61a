# Copyright (c) mmvfm contributors. All rights reserved.
"""The pure-Python PTB tokenizer against outputs of Stanford's tokenizer."""

import os.path as osp
import shutil
import subprocess

import pytest

from mmvfm.evaluation import (
    PTB_PUNCTUATIONS,
    ptb_tokenize,
    ptb_tokens,
    tokenize_captions,
)

# (caption, what pycocoevalcap's PTBTokenizer gives: Stanford CoreNLP 3.4.1
# with -preserveLines -lowerCase, then its punctuation removal)
CASES = [
    ("A man's riding a horse.", "a man 's riding a horse"),
    # clitics, upper case, several spaces, ';' and '!'
    (
        "They're NOT going; it isn't   raining!",
        "they 're not going it is n't raining",
    ),
    (
        "Don't DON'T won't Won't ain't shouldn't've I'd we'll you've I'm",
        "do n't do n't wo n't wo n't ai n't should n't 've i 'd we 'll "
        "you 've i 'm",
    ),
    ('cannot gonna wanna gotta lemme', 'can not gon na wan na got ta lem me'),
    # brackets become -lrb- ... and stay: the removal list is upper case
    (
        'Two dogs (brown and white) play in the "park".',
        'two dogs -lrb- brown and white -rrb- play in the park',
    ),
    ('[x] {y} a(b)c', '-lsb- x -rsb- -lcb- y -rcb- a -lrb- b -rrb- c'),
    # hyphenated words stay whole; dashes and stray hyphens are dropped
    (
        'The black-and-white cat, sitting on a chair...',
        'the black-and-white cat sitting on a chair',
    ),
    (
        'A 10-year-old boy riding a skate-board -- down the street!',
        'a 10-year-old boy riding a skate-board down the street',
    ),
    ('hyphen- -leading -5 x--y a---b', 'hyphen leading -5 x y a b'),
    # numbers, abbreviations and final periods
    (
        "I can't believe it's 3.5 o'clock -- wow?",
        "i ca n't believe it 's 3.5 o'clock wow",
    ),
    (
        'Mr. Smith lives in the U.S. with $5 and 50% off.',
        'mr. smith lives in the u.s. with $ 5 and 50 % off',
    ),
    (
        '1,000 people at 10:30 on 2014-01-02 e.g. etc.',
        '1,000 people at 10:30 on 2014-01-02 e.g. etc.',
    ),
    (
        '3. 5.5. dog.cat www.google.com plan b. a man.',
        '3 5.5 dog.cat www.google.com plan b. a man',
    ),
    ('a,b 5,a a:b 1,000, 10:30:', 'a b 5 a a b 1,000 10:30'),
    # quotes, possessive plurals, decades
    (
        "He said: 'hello' to the dogs' owner.",
        'he said hello to the dogs owner',
    ),
    ("'90s 'em 'hello' cats' toys", "'90s 'em hello cats toys"),
    # runs of ! and ? are one token and not in the removal list
    ('wow!!! what?! really?? hmm....', 'wow !!! what ?! really ?? hmm'),
    (
        'at&t a+b x*y #1 #hash and/or &amp;',
        'at & t a + b x * y # 1 #hash and/or &',
    ),
    # curly quotes and Unicode dashes / ellipsis
    (
        'don\u2019t \u201chi\u201d a\u2014b c \u2013 d x\u2026',
        "do n't hi a b c d x",
    ),
    # white space of any kind; nothing left
    ('  multiple \n\t spaces  ', 'multiple spaces'),
    ('', ''),
    ('... , ; -- !', ''),
]


@pytest.mark.parametrize('caption, expected', CASES)
def test_ptb_tokenize(caption, expected):
    assert ptb_tokenize(caption) == expected


def test_ptb_tokens_keep_punctuation():
    tokens = ptb_tokens('He said: "hi (there)".', remove_punctuation=False)
    assert tokens == [
        'he',
        'said',
        ':',
        '``',
        'hi',
        '-lrb-',
        'there',
        '-rrb-',
        "''",
        '.',
    ]
    assert ptb_tokens("'hello', it's", remove_punctuation=False) == [
        '`',
        'hello',
        "'",
        ',',
        'it',
        "'s",
    ]


def test_removal_list_is_pycocoevalcap():
    ptbtokenizer = pytest.importorskip('pycocoevalcap.tokenizer.ptbtokenizer')
    theirs = ptbtokenizer.PUNCTUATIONS  # codespell:ignore
    assert list(PTB_PUNCTUATIONS) == theirs


def test_tokenize_captions():
    out = tokenize_captions(
        {
            1: ['A Dog.', {'caption': "It's red!"}],
            'x': ['two  cats'],
        }
    )
    assert out == {1: ['a dog', "it 's red"], 'x': ['two cats']}


# Caption-like sentences on which the tokenizer claims to agree with the
# Java tokenizer (checked below when Java is available).
JAVA_CORPUS = [c for c, _ in CASES] + [
    'A man riding a wave on top of a surfboard.',
    'A kitchen with stainless steel appliances and granite counter tops.',
    "a person's hand holding a cell phone",
    'The 2 kids are playing frisbee in the park.',
    'A pizza with pepperoni, mushrooms, and olives.',
    'A sign that says "STOP" in front of a building.',
    'A hot dog with mustard & ketchup on a bun.',
    "A young girl eating a slice of pizza; she's smiling.",
    "This is an image of a man's bathroom - toilet, sink, etc.",
    'The U.S. flag flying high over a building at 3 p.m.',
    "A man wearing a t-shirt that reads 'I love NY'.",
    'An old-fashioned clock reads 12:45 on the wall.',
    'A train on the tracks near a sign reading "No Parking".',
    'A plate with a sandwich, chips and a pickle on it..',
    'Someone\'s cake that says "Happy B-day!!"',
    'ft. lb. oz. inc. jr. dr. mrs. vs. corp. ltd. co. mt. ave. fig. min.',
]
_JAR = None
try:
    import pycocoevalcap.tokenizer.ptbtokenizer as _ptb

    _JAR = osp.join(
        osp.dirname(_ptb.__file__), _ptb.STANFORD_CORENLP_3_4_1_JAR
    )
except ImportError:  # pragma: no cover
    pass


@pytest.mark.skipif(
    shutil.which('java') is None or _JAR is None or not osp.isfile(_JAR),
    reason='needs Java and pycocoevalcap',
)
def test_matches_stanford_tokenizer(tmp_path):
    """Run the tokenizer pycocoevalcap runs, with its options and
    punctuation removal, and compare."""
    src = tmp_path / 'captions.txt'
    src.write_text('\n'.join(c.replace('\n', ' ') for c in JAVA_CORPUS))
    cmd = [
        'java',
        '-cp',
        _JAR,
        'edu.stanford.nlp.process.PTBTokenizer',
        '-preserveLines',
        '-lowerCase',
        str(src),
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=120
    )
    lines = out.stdout.split('\n')[: len(JAVA_CORPUS)]
    punct = set(PTB_PUNCTUATIONS)
    java = [
        ' '.join(w for w in line.rstrip().split(' ') if w not in punct)
        for line in lines
    ]
    ours = [ptb_tokenize(c) for c in JAVA_CORPUS]
    assert ours == java
