# Copyright (c) mmvfm contributors. All rights reserved.
"""Image captioning: the decoder's output at each caption position vs the
vocabulary, the target the next token; generation by greedy or beam
search over the same candidates."""

import torch
from torch import Tensor

from ...language.bpe_tokenizer import BOS, EOS
from ...language.captions import one_caption_each
from ...language.decoding import beam_search, greedy_search
from ..task_cfg import UNIPERCEIVER_TASKS
from .base import UniPerceiverTask

DECODE_MODES = ('greedy', 'beam')


@UNIPERCEIVER_TASKS.register_module('captioning')
class CaptioningTask(UniPerceiverTask):
    """One sequence ``[<SPE>, image tokens, caption prefix]`` through ``g``
    (:meth:`UniPerceiverV2.caption_outputs`); each word's candidate
    ``g(f(<bos> word))``. Needs a causal text encoder.

    Config: ``decode_cfg`` (``mode='greedy'|'beam'``, ``max_length``,
    ``min_length`` (words before ``<eos>`` may end a caption, default 0),
    ``beam_size``, ``length_penalty``). Predicts ``pred_caption``
    (``CaptionMetric``).
    """

    @classmethod
    def check_cfg(cls, name: str, cfg: dict) -> dict:
        decode = dict(
            mode='greedy',
            max_length=20,
            min_length=0,
            beam_size=3,
            length_penalty=0.6,
        )
        given = cfg.get('decode_cfg') or {}
        unknown = sorted(set(given) - set(decode))
        if unknown:
            raise ValueError(
                f'tasks.{name}.decode_cfg: unknown keys {unknown} (known: '
                f'{sorted(decode)})'
            )
        decode.update(given)
        if decode['mode'] not in DECODE_MODES:
            raise ValueError(
                f'tasks.{name}.decode_cfg.mode must be one of '
                f'{DECODE_MODES}, got {decode["mode"]!r}'
            )
        if not 0 <= decode['min_length'] < decode['max_length']:
            raise ValueError(
                f'tasks.{name}.decode_cfg.min_length must be in [0, '
                f'max_length={decode["max_length"]}), got '
                f'{decode["min_length"]}'
            )
        cfg['decode_cfg'] = decode
        return cfg

    @classmethod
    def check_model(cls, model, names) -> None:
        if not model.text_encoder.causal:
            raise ValueError(
                f'tasks {names}: captioning needs a causal text '
                'encoder (text_encoder.causal=True): a bidirectional one '
                'shows each caption token the tokens it must predict'
            )

    def loss(self, model, inputs: Tensor, data_samples: list) -> dict:
        task = self.name
        ids, pad = model.encode_texts(
            one_caption_each(data_samples, 'UniPerceiverV2')
        )
        outputs = model.caption_outputs(
            model.image_tokens(inputs), ids[:, :-1], task
        )
        # vocabulary ids -> candidate indices (padding: weight 0)
        words = model.word_ids()
        index = torch.zeros(
            model.text_encoder.vocab_size, dtype=torch.long, device=ids.device
        )
        index[words] = torch.arange(len(words), device=ids.device)
        targets = index[ids[:, 1:]]
        weight = (~pad[:, 1:]).to(outputs.dtype)
        vocab = model.vocab_candidates(task, targets[~pad[:, 1:]], words)
        nll = model.loss_module(
            outputs.flatten(0, 1),
            vocab,
            targets.flatten(),
            weight.flatten(),
        )
        return dict(loss=nll)

    def generate(self, model, inputs: Tensor) -> Tensor:
        """Generated ids (N, T) (no ``<bos>``; ``<pad>`` after ``<eos>``)."""
        task = self.name
        cfg = model.task_cfgs[task]['decode_cfg']
        image = model.image_tokens(inputs)
        words = model.word_ids()
        vocab = model.vocab_candidates(task, words=words)
        V = model.text_encoder.vocab_size
        beams = cfg['beam_size'] if cfg['mode'] == 'beam' else 1
        expanded = image.repeat_interleave(beams, dim=0)

        eos_col = (words == EOS).nonzero()[:, 0]

        def step(prefix: Tensor, cache):
            img = expanded if prefix.shape[0] == expanded.shape[0] else image
            out = model.caption_outputs(img, prefix, task)[:, -1]
            logits = model.loss_module.logits(out, vocab)
            if prefix.shape[1] - 1 < cfg['min_length']:
                # no <eos> before min_length tokens: renormalised over the
                # other words (an undertrained model's beam search with
                # length penalty 0.6 otherwise prefers the empty caption)
                logits[:, eos_col] = float('-inf')
            log_probs = out.new_full((out.shape[0], V), float('-inf'))
            log_probs[:, words] = logits.log_softmax(-1)
            return log_probs, None

        common = dict(
            batch_size=inputs.shape[0],
            bos=BOS,
            eos=EOS,
            max_length=cfg['max_length'],
            use_cache=False,
            device=inputs.device,
        )
        if cfg['mode'] == 'beam':
            ids, _ = beam_search(
                step,
                beam_size=beams,
                length_penalty=cfg['length_penalty'],
                **common,
            )
        else:
            ids, _ = greedy_search(step, **common)
        return ids

    def predict(self, model, inputs: Tensor, data_samples: list) -> list:
        texts = model.tokenizer.decode(self.generate(model, inputs))
        for sample, text in zip(data_samples, texts):
            sample.set_field(text, 'pred_caption')
        return data_samples
