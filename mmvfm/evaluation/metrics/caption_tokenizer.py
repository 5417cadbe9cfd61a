# Copyright (c) mmvfm contributors. All rights reserved.
"""A pure-Python stand-in for pycocoevalcap's ``PTBTokenizer``.

pycocoevalcap tokenizes captions by running Stanford CoreNLP 3.4.1's
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` in a
Java subprocess and then drops the tokens of its punctuation list
(:data:`PTB_PUNCTUATIONS`, compared case-sensitively). Its BLEU and CIDEr-D
scorers only split on white space, so they score whatever this step gives
them. :func:`ptb_tokenize` reproduces that step without Java.

Reproduced (checked against the Java tokenizer of pycocoevalcap 1.2):

* lower case; any run of white space (newlines included) separates tokens;
* ``, ; : ! ?`` and ``&amp; & + = * % $`` become tokens; a comma or colon
  between two digits stays inside the number (``1,000``, ``10:30``);
  ``#`` is split off before a digit (``# 1``) but kept in ``#hash``; a run
  of ``!``/``?`` at the start or end of a word is one token (``?!``,
  ``!!!``), inside a word it is kept (``x?y``);
* the clitics ``n't 's 're 've 'll 'd 'm`` are split off, also several in
  a row (``shouldn't've`` -> ``should n't 've``, ``can't`` -> ``ca n't``,
  ``won't`` -> ``wo n't``); ``cannot gonna gotta wanna gimme lemme`` are
  split in two (``can not``, ``gon na``, ...);
* a final period is split off unless the word is an abbreviation: single
  letters with periods (``b.``, ``u.s.``, ``e.g.``, ``p.m.``) or a word of
  :data:`PTB_ABBREVIATIONS` (``mr.``, ``dr.``, ``etc.``, ...); numbers
  lose their final period (``3.`` -> ``3 .``), inner periods stay
  (``5.5``, ``dog.cat``, ``www.site.com``); three or more periods are one
  ``...`` token, a Unicode ellipsis too;
* double quotes become `````` or ``''`` and single quotes at the start
  or end of a word `````/``'`` (all dropped later), except ``'em``,
  ``'n'`` and decades such as ``'90s``; curly quotes count as straight
  ones, en and em dashes as ``--``;
* two or more hyphens are one ``--`` token; a hyphen at the start or end
  of a word is split off (but ``-5`` stays a number); hyphenated words
  stay whole (``black-and-white``, ``one-year-old``); ``/`` and ``@``
  stay inside words (``and/or``);
* brackets become ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and are **kept**:
  Stanford lower-cases them too (``-LRB-`` -> ``-lrb-``), so
  pycocoevalcap's upper-case ``'-LRB-'`` entries never match and the
  bracket tokens stay in the captions it scores. We do the same so that
  scores agree with pycocoevalcap's.

Where it may differ from Stanford's tokenizer (all rare in captions):

* abbreviations: Stanford's list is longer and partly depends on the
  next word (``no. 5`` keeps ``no.``, ``there is no.`` does not); words
  missing from :data:`PTB_ABBREVIATIONS` lose their period here;
* other apostrophes inside words are kept (``y'all``, ``rock'n'roll``
  here; Stanford gives ``y' all``, ``rock 'n' roll``, ``'t is``);
* Stanford's rules for SGML tags (``<b>``), emoticons (``:)`` ->
  ``:-rrb-``), URLs, e-mail addresses, phone numbers and fractions are
  not reproduced: ``<`` and ``>`` stay inside words, ``:)`` becomes
  ``: -rrb-``;
* two periods (``wow..``) give two ``.`` tokens here and a period inside
  a run of periods next to a word (``a...b``) is not attached to the word;
* Unicode is otherwise passed through as is (Stanford normalises some
  more characters, e.g. other dashes and fractions);
* tokens that pycocoevalcap drops anyway may differ when
  ``remove_punctuation=False``: Stanford adds a ``.`` after an
  abbreviation that ends a caption (``etc. .``) and picks ````` or ``'``
  for a single quote from the context.
"""

import re
from typing import Dict, Hashable, List, Mapping, Sequence, Union

__all__ = [
    'PTB_ABBREVIATIONS',
    'PTB_PUNCTUATIONS',
    'ptb_tokenize',
    'ptb_tokens',
    'tokenize_captions',
]

#: Tokens pycocoevalcap's ``PTBTokenizer`` drops after tokenizing (the
#: list in its ``ptbtokenizer.py``, compared case-sensitively with
#: lower-cased tokens, so the upper-case bracket entries never match).
PTB_PUNCTUATIONS = (
    "''",
    "'",
    '``',
    '`',
    '-LRB-',
    '-RRB-',
    '-LCB-',
    '-RCB-',
    '.',
    '?',
    '!',
    ',',
    ':',
    '-',
    '--',
    '...',
    ';',
)

#: Words whose final period Stanford's tokenizer keeps (without the period;
#: single letters and letter-period runs such as ``u.s`` are handled by a
#: pattern). A subset of Stanford's list: the common English titles,
#: months, US states and company suffixes that are not also plain words.
PTB_ABBREVIATIONS = frozenset(
    [
        'al',
        'apr',
        'aug',
        'ave',
        'bros',
        'calif',
        'capt',
        'cf',
        'co',
        'col',
        'corp',
        'dec',
        'dept',
        'dr',
        'est',
        'ft',
        'etc',
        'feb',
        'fla',
        'fri',
        'gen',
        'gov',
        'inc',
        'jan',
        'jr',
        'lt',
        'ltd',
        'maj',
        'mar',
        'mon',
        'mr',
        'mrs',
        'ms',
        'mt',
        'nov',
        'oct',
        'ph.d',
        'pres',
        'prof',
        'rep',
        'rev',
        'sen',
        'sept',
        'sgt',
        'sq',
        'sr',
        'st',
        'tue',
        'univ',
        'vs',
    ]
)

_UNICODE = {
    '\u2014': ' -- ',  # em dash
    '\u2013': ' -- ',  # en dash
    '\u2026': ' ... ',  # ellipsis
    '\u2018': "'",
    '\u2019': "'",
    '\u201c': '"',
    '\u201d': '"',
    '\u00a0': ' ',  # no-break space
}
_UNICODE_RE = re.compile('|'.join(_UNICODE))
_BRACKETS = {
    '(': '-lrb-',
    ')': '-rrb-',
    '[': '-lsb-',
    ']': '-rsb-',
    '{': '-lcb-',
    '}': '-rcb-',
}
# (pattern, replacement) applied in order to the lower-cased caption; each
# replacement surrounds a token with spaces.
_SUBSTITUTIONS = [
    (re.compile(r'&amp;'), '&'),
    # a double quote opens after a space or an opening bracket
    (re.compile(r'(?:^|(?<=[\s(\[{]))"'), ' `` '),
    (re.compile(r'"'), " '' "),
    (re.compile(r'[()\[\]{}]'), lambda m: f' {_BRACKETS[m.group()]} '),
    (re.compile(r'\.{3,}'), ' ... '),
    (re.compile(r'-{2,}'), ' -- '),
    (re.compile(r'[;&+=*%$]'), r' \g<0> '),
    # commas and colons, except between two digits (1,000 and 10:30)
    (re.compile(r'(?<!\d)[,:]|[,:](?!\d)'), r' \g<0> '),
    (re.compile(r'#(?=\d)'), ' # '),
]
# tokens the per-word rules must not take apart
_ATOMIC = frozenset(
    list(_BRACKETS.values()) + ['--', '...', '``', "''", "'em", "'n'"]
)
_CLITIC_RE = re.compile(r"(.+?)(n't|'s|'re|'ve|'ll|'d|'m)")
_CLITICS = frozenset(["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"])
_SPLIT_WORDS = {
    'cannot': ['can', 'not'],
    'gimme': ['gim', 'me'],
    'gonna': ['gon', 'na'],
    'gotta': ['got', 'ta'],
    'lemme': ['lem', 'me'],
    'wanna': ['wan', 'na'],
}
_DECADE_RE = re.compile(r"'\d0s")
_LETTERS_RE = re.compile(r'(?:[a-z]\.)*[a-z]')
_MARKS_RE = re.compile(r'[!?]+')


def _is_abbreviation(word: str) -> bool:
    """Whether ``word`` (ending with a period) keeps its period."""
    stem = word[:-1]
    return bool(_LETTERS_RE.fullmatch(stem)) or stem in PTB_ABBREVIATIONS


def _split_clitics(word: str) -> List[str]:
    """``"shouldn't've"`` -> ``['should', "n't", "'ve"]``."""
    if word in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[word])
    clitics: List[str] = []
    while True:
        m = _CLITIC_RE.fullmatch(word)
        if m is None:
            break
        word = m.group(1)
        clitics.insert(0, m.group(2))
    return [word] + clitics


def _split_word(word: str) -> List[str]:
    """Split one white-space separated piece into tokens."""
    head: List[str] = []
    tail: List[str] = []
    while len(word) > 1 and word not in _ATOMIC and word not in _CLITICS:
        m = _MARKS_RE.match(word)
        if m is not None and m.end() < len(word):  # '?!hello'
            head.append(m.group())
            word = word[m.end() :]
            continue
        m = _MARKS_RE.search(word)
        if m is not None and m.end() == len(word) and m.start() > 0:
            tail.insert(0, m.group())  # 'hello?!'
            word = word[: m.start()]
            continue
        if word[0] == "'" and not _DECADE_RE.fullmatch(word):
            head.append('`')  # opening single quote
            word = word[1:]
        elif word[-1] == "'":
            tail.insert(0, "'")  # closing quote or plural possessive
            word = word[:-1]
        elif word[0] == '-' and not word[1].isdigit():
            head.append('-')
            word = word[1:]
        elif word[-1] == '-':
            tail.insert(0, '-')
            word = word[:-1]
        elif word[-1] == '.' and not _is_abbreviation(word):
            tail.insert(0, '.')
            word = word[:-1]
        else:
            break
    core = [word] if word in _ATOMIC else _split_clitics(word)
    return head + core + tail


def ptb_tokens(caption: str, remove_punctuation: bool = True) -> List[str]:
    """Tokenize one caption the way pycocoevalcap's ``PTBTokenizer`` does.

    See the module docstring for what is reproduced and what may differ.

    Args:
        caption: Raw caption; may contain newlines.
        remove_punctuation: Drop the tokens of :data:`PTB_PUNCTUATIONS`
            (pycocoevalcap always does).

    Returns:
        list[str]: Lower-cased tokens.
    """
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], caption.lower())
    for pattern, repl in _SUBSTITUTIONS:
        text = pattern.sub(repl, text)
    tokens = [tok for word in text.split() for tok in _split_word(word)]
    if remove_punctuation:
        tokens = [tok for tok in tokens if tok not in PTB_PUNCTUATIONS]
    return tokens


def ptb_tokenize(caption: str) -> str:
    """Tokenize one caption into the string pycocoevalcap's scorers take.

    Example:
        >>> ptb_tokenize("A man's riding a horse, isn't he?")
        "a man 's riding a horse is n't he"

    Args:
        caption: Raw caption.

    Returns:
        str: The tokens of :func:`ptb_tokens` joined by single spaces.
    """
    return ' '.join(ptb_tokens(caption))


def tokenize_captions(
    captions: Mapping[Hashable, Sequence[Union[str, dict]]],
) -> Dict[Hashable, List[str]]:
    """Tokenize every caption of a ``{id: [caption, ...]}`` mapping.

    A drop-in for ``PTBTokenizer().tokenize``: the captions may also be
    dicts with a ``'caption'`` key, as pycocoevalcap passes them.

    Args:
        captions: Image id -> list of raw captions (``str`` or
            ``{'caption': str}``).

    Returns:
        dict: Image id -> list of tokenized captions (same order).
    """
    out: Dict[Hashable, List[str]] = {}
    for key, caps in captions.items():
        out[key] = [
            ptb_tokenize(c['caption'] if isinstance(c, dict) else c)
            for c in caps
        ]
    return out
