# Copyright (c) mmvfm contributors. All rights reserved.
"""Train mmvfm's byte-level BPE tokenizer from a COCO captions file.

python tools/misc/train_tokenizer.py CAPTIONS_JSON OUT.json
    [--vocab-size 512] [--min-frequency 2]

Prints the vocabulary size of the file: a config's ``vocab_size`` must be
that number (the BPE trainer stops early when the captions hold fewer
merges than asked for). Offline: nothing is downloaded.
"""

import argparse
import os
import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

from mmvfm.models.language import coco_captions, train_bpe  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('captions', help='COCO captions json')
    parser.add_argument('out', help='the tokenizer file to write (.json)')
    parser.add_argument('--vocab-size', type=int, default=512)
    parser.add_argument('--min-frequency', type=int, default=2)
    args = parser.parse_args(argv)
    try:
        captions = coco_captions(args.captions)
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        size = train_bpe(
            captions, args.out, args.vocab_size, args.min_frequency
        )
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None
    print(f'wrote {args.out}: vocab_size={size}, {len(captions)} captions')
    return size


if __name__ == '__main__':
    main()
