# Copyright (c) mmvfm contributors. All rights reserved.
"""Uni-Perceiver v2 (Li et al., CVPR 2023), part 1: image classification,
image captioning and image-text retrieval as one maximum-likelihood
problem over candidate sets, through one task-agnostic decoder.

The authors never released code; every choice the paper leaves open is
ours, stated here and in configs/uniperceiver_v2/README.md.

Encoders ``f``:

- image: any backbone's last map (N, C, h, w) -> h*w tokens projected to
  the decoder's dims (positions: the backbone's own), plus
  ``num_global`` *global tokens*: learned queries, each an attention
  pooling (multi-head attention, one query) over those tokens. The
  decoder's image input is ``[global tokens, map tokens]``. (Part 2 adds
  the region proposals.)
- text: a :class:`TextTransformer` (its token features, projected);
  ``<bos> text <eos>`` from the :class:`BPETokenizer`.

Decoder ``g`` (:class:`TaskAgnosticDecoder`): ``<SPE>`` prepended, its
output the representation; normalised, compared by cosine / τ
(:class:`UnifiedMLELoss`).

Tasks (``tasks=dict(name=dict(type=...))``) and their candidates:

- ``'classification'``: ``g(f(image))`` vs the class names,
  ``g(f(template.format(name)))`` (``template='{}'``), encoded every step
  (the text side is trained jointly);
- ``'retrieval'``: ``g(f(image))`` vs ``g(f(caption))`` of the other pairs
  in the batch, both ways, averaged; with ``gather=True`` (default) the
  candidates are the whole global batch, gathered across ranks *with*
  gradient (:func:`all_gather_with_grad`); one caption drawn per image;
- ``'captioning'``: one sequence ``[<SPE>, image tokens, caption prefix]``
  through ``g``; the output at caption position ``t`` vs the *vocabulary*,
  each word's candidate ``g(f(word))`` (the text ``<bos> word`` through
  the text encoder and ``g``; the special tokens but ``<eos>`` are not
  candidates), the target the next token. Attention: image tokens
  (and ``<SPE>``) see only the image, caption tokens the image and the
  earlier caption tokens; the text encoder must therefore be causal
  (checked at build). Generation: greedy or beam search of the decoding
  API, scores ``log_softmax(cos / τ)`` over the same candidates.

The loss of an iteration of task ``k`` is ``w_k * NLL_k`` (``loss_weight``,
default 1): the sampling ratio is not a factor (the multi-task loop draws
the task with it).
"""

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.dist import get_dist_info
from mmengine.model import BaseModel
from mmengine.structures import BaseDataElement, InstanceData
from torch import Tensor

from ..language.bpe_tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS
from ..language.captions import one_caption_each, sample_captions
from ..language.decoding import beam_search, greedy_search
from ..utils import all_gather_with_grad
from .proposal_tokens import ProposalTokens
from .region_proposer import masks_to_boxes
from .task_agnostic_decoder import IMAGE_TYPE, TEXT_TYPE

TASK_TYPES = (
    'classification',
    'retrieval',
    'captioning',
    'detection',
    'instance_segmentation',
)
REGION_TASKS = ('detection', 'instance_segmentation')
DECODE_MODES = ('greedy', 'beam')


class GlobalTokens(nn.Module):
    """``num`` attention-pooling heads over the image tokens.

    Args:
        dims (int): token dims.
        num (int): global tokens (learned queries).
        num_heads (int): heads of each pooling attention.
    """

    def __init__(self, dims: int, num: int, num_heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(num, dims))
        self.attn = nn.MultiheadAttention(dims, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dims)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, S, dims) -> (N, num, dims)."""
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        out, _ = self.attn(q, tokens, tokens, need_weights=False)
        return self.norm(out)


SYNONYMS = ('all', 'first')


def _candidate_names(classes: Sequence[str], synonyms: str) -> List[str]:
    """A dataset's class names as candidates: all of each name, or its
    first synonym (ImageNet's 'great white shark, white shark, man-eater,
    ...' -> 'great white shark'), then a name the list repeats (ImageNet's
    'crane', bird and machine) numbered from its second occurrence on
    ('crane (2)'), as candidates must differ."""
    if synonyms == 'first':
        classes = [c.split(',')[0].strip() for c in classes]
    return _numbered(classes)


def _dataset_classes(task: str, dataset: str) -> List[str]:
    """The ``METAINFO['classes']`` of a registered dataset type (e.g.
    ``'CocoDataset'``, ``'mmpretrain.ImageNet'``)."""
    from mmdet.registry import DATASETS

    try:
        dataset_cls = DATASETS.get(dataset)
    except KeyError:
        dataset_cls = None
    classes = getattr(dataset_cls, 'METAINFO', {}).get('classes')
    if not classes:
        raise ValueError(
            f'tasks.{task}.classes={dataset!r}: no registered dataset of '
            'that type with METAINFO classes (give a list of names, or a '
            "dataset type such as 'CocoDataset' or 'mmpretrain.ImageNet')"
        )
    return list(classes)


def _numbered(classes: Sequence[str]) -> List[str]:
    """``classes`` with each repeated name numbered from its second
    occurrence on (``'crane'``, ``'crane (2)'``)."""
    seen: Dict[str, int] = {}
    names = []
    for c in classes:
        seen[c] = seen.get(c, 0) + 1
        names.append(c if seen[c] == 1 else f'{c} ({seen[c]})')
    return names


def _check_task(name: str, cfg: dict) -> dict:
    cfg = dict(cfg)
    kind = cfg.get('type')
    if kind not in TASK_TYPES:
        raise ValueError(
            f'tasks.{name}.type must be one of {TASK_TYPES}, got {kind!r}'
        )
    cfg.setdefault('loss_weight', 1.0)
    cfg.setdefault('grad_candidates', None)
    cfg.setdefault('candidate_chunk', 1024)
    for key in ('grad_candidates', 'candidate_chunk'):
        value = cfg[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(
                f'tasks.{name}.{key} must be a positive int, got {value!r}'
            )
    if kind in REGION_TASKS:
        cfg.setdefault('max_per_image', 100)
        cfg.setdefault('topk', None)
        for key in ('max_per_image', 'topk'):
            value = cfg[key]
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(
                    f'tasks.{name}.{key} must be a positive int, got {value!r}'
                )
    if kind in ('classification',) + REGION_TASKS:
        classes = cfg.get('classes')
        synonyms = cfg.setdefault('synonyms', 'all')
        if synonyms not in SYNONYMS:
            raise ValueError(
                f'tasks.{name}.synonyms must be one of {SYNONYMS}, got '
                f'{synonyms!r}'
            )
        if isinstance(classes, str):  # a registered dataset's class names
            classes = _candidate_names(
                _dataset_classes(name, classes), synonyms
            )
        elif classes and synonyms == 'first':
            classes = _candidate_names(classes, synonyms)
        if not classes:
            raise ValueError(
                f'tasks.{name}.classes: an empty class list (the '
                'classification candidates)'
            )
        bad = [c for c in classes if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f'tasks.{name}.classes: empty names {bad}')
        dup = sorted({c for c in classes if list(classes).count(c) > 1})
        if dup:
            raise ValueError(f'tasks.{name}.classes: repeated names {dup}')
        template = cfg.setdefault('template', '{}')
        if '{}' not in template:
            raise ValueError(
                f'tasks.{name}.template {template!r} has no {{}} for the '
                'class name'
            )
        cfg['classes'] = list(classes)
    elif kind == 'retrieval':
        cfg.setdefault('gather', True)
    else:
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


@MODELS.register_module()
class UniPerceiverV2(BaseModel):
    """Args:
    backbone (dict): the image backbone (its last output a map
        (N, C, h, w) or tokens (N, S, C)).
    text_encoder (dict): a :class:`TextTransformer` config.
    tokenizer (dict): a :class:`BPETokenizer` config (read at first use).
    decoder (dict): a :class:`TaskAgnosticDecoder` config.
    tasks (dict): task name -> ``dict(type=..., loss_weight=1.0, ...)``
        (module doc): ``classes`` (names, or a registered dataset type
        whose ``METAINFO`` classes to take; a repeated name is numbered,
        'crane (2)'), ``synonyms`` (``'all'`` of a comma-separated name or
        its ``'first'``) and ``template`` (classification, detection,
        instance segmentation),
        ``gather`` (retrieval), ``decode_cfg`` (captioning:
        ``mode='greedy'|'beam'``, ``max_length``, ``min_length`` (words
        before ``<eos>`` may end a caption, default 0), ``beam_size``,
        ``length_penalty``); every task with candidates:
        ``grad_candidates`` (how many carry gradient per step, default all)
        and ``candidate_chunk`` (:meth:`_candidates`).
    image_channels (int): the backbone's channels C.
    num_global (int): global image tokens.
    global_heads (int): heads of each global token's pooling.
    loss (dict): the :class:`UnifiedMLELoss` config.
    proposer (dict, optional): the :class:`RegionProposer` config, required
        by ``'detection'`` / ``'instance_segmentation'`` tasks (part 2).
    proposal_tokens (dict, optional): :class:`ProposalTokens` arguments
        other than ``dims`` (``num_feats``, ``pool_size``, ...).
    data_preprocessor (dict, optional): usually
        ``MultiTaskDataPreprocessor``.
    init_cfg (dict, optional): initialisation config.
    """

    def __init__(
        self,
        backbone: dict,
        text_encoder: dict,
        tokenizer: dict,
        decoder: dict,
        tasks: Dict[str, dict],
        image_channels: int,
        num_global: int = 4,
        global_heads: int = 4,
        loss: Optional[dict] = None,
        proposer: Optional[dict] = None,
        proposal_tokens: Optional[dict] = None,
        data_preprocessor: Optional[dict] = None,
        init_cfg=None,
    ) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg
        )
        if not tasks:
            raise ValueError('tasks: at least one task is needed')
        self.task_cfgs = {n: _check_task(n, c) for n, c in tasks.items()}
        self.task_index = {n: i for i, n in enumerate(self.task_cfgs)}
        decoder = dict(decoder)
        if decoder.get('moe') is not None:
            decoder['moe'] = dict(decoder['moe'], num_tasks=len(tasks))
        self.backbone = MODELS.build(backbone)
        self.text_encoder = MODELS.build(text_encoder)
        self.decoder = MODELS.build(decoder)
        dims = self.decoder.dims
        self.image_proj = nn.Sequential(
            nn.Linear(image_channels, dims), nn.LayerNorm(dims)
        )
        width = self.text_encoder.token_embed.embedding_dim
        self.text_proj = nn.Sequential(
            nn.Linear(width, dims), nn.LayerNorm(dims)
        )
        self.global_tokens = (
            GlobalTokens(dims, num_global, global_heads)
            if num_global
            else None
        )
        self.loss_module = MODELS.build(
            dict(type='UnifiedMLELoss', **(loss or {}))
        )
        self.tokenizer_cfg = copy.deepcopy(tokenizer)
        self._tokenizer = None
        regions = [
            n for n, c in self.task_cfgs.items() if c['type'] in REGION_TASKS
        ]
        if regions and proposer is None:
            raise ValueError(
                f'tasks {regions}: detection and instance segmentation need '
                'the region proposals (proposer=dict(type="RegionProposer", '
                '...))'
            )
        self.proposer = None
        if proposer is not None:
            self.proposer = MODELS.build(proposer)
            Q = self.proposer.num_queries
            for n in regions:
                topk = self.task_cfgs[n]['topk']
                if topk is not None and topk > Q:
                    raise ValueError(
                        f'tasks.{n}.topk={topk} proposals, the proposal '
                        f'stage makes {Q} (its num_queries) per image'
                    )
            q_dims = self.proposer.query_dims
            self.sem_proj = nn.Sequential(
                nn.Linear(q_dims, dims), nn.LayerNorm(dims)
            )
            self.proposal_tokens = ProposalTokens(
                dims, **(proposal_tokens or {})
            )
        captioning = [
            n for n, c in self.task_cfgs.items() if c['type'] == 'captioning'
        ]
        if captioning and not self.text_encoder.causal:
            raise ValueError(
                f'tasks {captioning}: captioning needs a causal text '
                'encoder (text_encoder.causal=True): a bidirectional one '
                'shows each caption token the tokens it must predict'
            )

    # ---------------------------------------------------------------- bits
    @property
    def tasks(self) -> List[str]:
        return list(self.task_cfgs)

    def task_uses_collective(self, task: str) -> bool:
        """Retrieval that gathers across ranks, and the region tasks when
        the proposal stage averages its loss normalisers over the ranks
        (its ``sync_normalizers``)."""
        cfg = self.task_cfgs[task]
        if cfg['type'] == 'retrieval':
            return bool(cfg['gather'])
        if cfg['type'] in ('detection', 'instance_segmentation'):
            return bool(getattr(self.proposer, 'sync_normalizers', False))
        return False

    def check_task_data(self, task: str, metainfo: dict) -> None:
        """A task's dataset declares the task's candidate class names, in
        the same order (its labels index them); called by the multi-task
        loops at build time. Datasets that declare no classes pass; a name
        the dataset repeats is compared numbered ('crane (2)')."""
        cfg = self.task_cfgs.get(task)
        if cfg is None or 'classes' not in cfg:
            return
        declared = (metainfo or {}).get('classes')
        if not declared:
            return
        # as the candidates were made from a dataset's names
        declared = _candidate_names(list(declared), cfg['synonyms'])
        want = cfg['classes']
        if declared == want:
            return
        first = next(
            (i for i, (a, b) in enumerate(zip(declared, want)) if a != b),
            min(len(declared), len(want)),
        )

        def at(names):
            return repr(names[first]) if first < len(names) else 'none'

        raise ValueError(
            f'task {task!r}: the dataset declares {len(declared)} classes, '
            f'tasks.{task}.classes (the candidates its labels index) has '
            f'{len(want)}; first difference at index {first}: dataset '
            f'{at(declared)}, candidates {at(want)}. They must be the same '
            'list in the same order'
        )

    @property
    def tokenizer(self):
        """The ``BPETokenizer``, read from its file at first use."""
        if self._tokenizer is None:
            self._tokenizer = TASK_UTILS.build(self.tokenizer_cfg)
            if self._tokenizer.vocab_size != self.text_encoder.vocab_size:
                raise ValueError(
                    f'tokenizer vocab_size {self._tokenizer.vocab_size} != '
                    f'text_encoder.vocab_size {self.text_encoder.vocab_size}'
                )
        return self._tokenizer

    def backbone_maps(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        """The backbone's outputs as a tuple (the last one read by the
        global and map tokens, all of them by the proposal stage)."""
        out = self.backbone(inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    def image_tokens(
        self, inputs: Tensor, maps: Optional[Tuple[Tensor, ...]] = None
    ) -> Tensor:
        """``f(image)``: (N, 3, H, W) -> (N, num_global + h*w, dims)
        (``maps``: the backbone's outputs when already computed)."""
        out = (maps or self.backbone_maps(inputs))[-1]
        if out.dim() == 4:
            out = out.flatten(2).transpose(1, 2)  # [N, h*w, C]
        tokens = self.image_proj(out)
        if self.global_tokens is not None:
            tokens = torch.cat([self.global_tokens(tokens), tokens], dim=1)
        return tokens

    def region_outputs(
        self,
        maps: Tuple[Tensor, ...],
        proposals: dict,
        task: str,
        index: Optional[Tensor] = None,
    ) -> Tensor:
        """``g(f(region))`` of every proposal (N, Q', dims), unnormalised.

        One decoder sequence per image, ``[<SPE>, global tokens, proposal
        tokens]`` (our choice: the proposals see the image through the
        global tokens and each other, not the map tokens); the outputs at
        the proposal positions. ``index`` (N, Q') keeps those proposals
        (e.g. the top-k by objectness).
        """
        queries = proposals['queries']
        masks = proposals['mask_logits']
        boxes = proposals['boxes']
        if index is not None:
            take = index[..., None]
            queries = queries.gather(1, take.expand(-1, -1, queries.shape[-1]))
            boxes = boxes.gather(1, take.expand(-1, -1, 4))
            masks = masks[
                torch.arange(len(index), device=index.device)[:, None], index
            ]
        tokens = self.proposal_tokens(self.sem_proj(queries), boxes, masks)
        G = 0
        if self.global_tokens is not None:
            last = maps[-1]
            if last.dim() == 4:
                last = last.flatten(2).transpose(1, 2)
            glob = self.global_tokens(self.image_proj(last))
            G = glob.shape[1]
            tokens = torch.cat([glob, tokens], dim=1)
        modality = tokens.new_full(tokens.shape[1:2], IMAGE_TYPE).long()
        out = self.decoder(tokens, modality, self.task_index[task])
        return out[:, 1 + G :]

    def text_tokens(self, ids: Tensor) -> Tensor:
        """``f(text)``: ids (N, L) -> (N, L, dims)."""
        return self.text_proj(self.text_encoder(ids)[0])

    def encode_texts(self, texts: Sequence[str]) -> Tuple[Tensor, Tensor]:
        """Token ids (N, L) and padding (N, L) of ``texts``."""
        ids, valid = self.tokenizer.encode(texts)
        device = self.loss_module.logit_scale.device
        return ids.to(device), ~valid.to(device)

    def represent_images(self, inputs: Tensor, task: str) -> Tensor:
        """``g(f(image))`` normalised: (N, dims)."""
        tokens = self.image_tokens(inputs)
        modality = tokens.new_full(tokens.shape[1:2], IMAGE_TYPE).long()
        return self.decoder.represent(tokens, modality, self.task_index[task])

    def represent_texts(self, texts: Sequence[str], task: str) -> Tensor:
        """``g(f(text))`` normalised: (N, dims)."""
        ids, pad = self.encode_texts(texts)
        tokens = self.text_tokens(ids)
        modality = torch.full(
            tokens.shape[1:2], TEXT_TYPE, device=tokens.device
        )
        return self.decoder.represent(
            tokens, modality, self.task_index[task], key_padding_mask=pad
        )

    def _candidates(
        self,
        encode: Callable[[Tensor], Tensor],
        num: int,
        task: str,
        targets: Optional[Tensor] = None,
    ) -> Tensor:
        """All ``num`` candidates ``encode(index) -> (len(index), dims)``.

        With ``tasks.<task>.grad_candidates = G`` while gradients are on,
        every candidate is computed (the likelihood stays over the whole
        set) but only G of them with gradient -- the ``targets`` (candidate
        indices of this batch), then others drawn at random -- and the rest
        without, ``candidate_chunk`` at a time (OURS, for memory: 30k words
        or 1000 ImageNet names through the text encoder and the decoder
        with gradient do not fit). ``None`` (default): all with gradient.
        Without gradients (evaluation) the candidates are chunked.
        """
        cfg = self.task_cfgs[task]
        device = self.loss_module.logit_scale.device
        index = torch.arange(num, device=device)
        chunk = cfg['candidate_chunk']
        grad = cfg['grad_candidates']
        if torch.is_grad_enabled() and (grad is None or grad >= num):
            return encode(index)

        def chunked() -> Tensor:
            return torch.cat(
                [encode(index[i : i + chunk]) for i in range(0, num, chunk)]
            )

        if not torch.is_grad_enabled():
            return chunked()
        chosen = torch.zeros(num, dtype=torch.bool, device=device)
        if targets is not None and targets.numel():
            chosen[targets.reshape(-1).to(device)] = True
        others = index[~chosen]
        extra = max(grad - int(chosen.sum()), 0)
        perm = torch.randperm(len(others), device=device)[:extra]
        chosen[others[perm]] = True
        with torch.no_grad():
            out = chunked()
        picked = index[chosen]
        return out.index_put((picked,), encode(picked))

    def class_candidates(
        self, task: str, targets: Optional[Tensor] = None
    ) -> Tensor:
        """The class-name candidates (K, dims) of a classification task
        (``targets``: the batch's labels, for ``grad_candidates``); a name
        that does not fit the tokenizer's ``max_length`` is an error naming
        it (it would be truncated into another name)."""
        cfg = self.task_cfgs[task]
        texts = [cfg['template'].format(c) for c in cfg['classes']]
        limit = self.tokenizer.max_length
        for name, text in zip(cfg['classes'], texts):
            n = len(self.tokenizer.tokenize(text)) + 2
            if n > limit:
                raise ValueError(
                    f'tasks.{task}: class {name!r} ({text!r}) is {n} tokens '
                    f'with <bos>/<eos>, the tokenizer keeps {limit}: it '
                    'cannot be encoded whole'
                )
        return self._candidates(
            lambda i: self.represent_texts([texts[j] for j in i], task),
            len(texts),
            task,
            targets,
        )

    def word_ids(self) -> Tensor:
        """The vocabulary ids that are caption candidates (V',): every id
        but the special tokens other than ``<eos>`` (``<pad>``, ``<bos>``,
        ``<mask>``, ``<unk>``, ``<spe>``), in training and generation."""
        V = self.text_encoder.vocab_size
        banned = {i for i in range(len(SPECIAL_TOKENS)) if i != EOS}
        return torch.tensor(
            [i for i in range(V) if i not in banned],
            device=self.loss_module.logit_scale.device,
        )

    def vocab_candidates(
        self, task: str, targets: Optional[Tensor] = None
    ) -> Tensor:
        """Each candidate word's ``g(f(word))`` (V', dims), in the order of
        :meth:`word_ids`: the word as the text ``<bos> word`` through the
        text encoder and the decoder (``targets``: the batch's candidate
        indices, for ``grad_candidates``)."""
        words = self.word_ids()
        ids = torch.stack([torch.full_like(words, BOS), words], dim=1)
        modality = torch.full((2,), TEXT_TYPE, device=ids.device)

        def encode(index: Tensor) -> Tensor:
            tokens = self.text_tokens(ids[index])
            return self.decoder.represent(
                tokens, modality, self.task_index[task]
            )

        return self._candidates(encode, len(words), task, targets)

    def caption_outputs(
        self, image_tokens: Tensor, prefix: Tensor, task: str
    ) -> Tensor:
        """The decoder's outputs at the caption positions (N, T, dims)
        for image tokens (N, S, dims) and caption prefixes (N, T) (module
        doc: attention)."""
        N, S, _ = image_tokens.shape
        T = prefix.shape[1]
        text = self.text_tokens(prefix)
        tokens = torch.cat([image_tokens, text], dim=1)
        modality = torch.cat(
            [
                torch.full((S,), IMAGE_TYPE, device=tokens.device),
                torch.full((T,), TEXT_TYPE, device=tokens.device),
            ]
        )
        L = 1 + S + T  # with <SPE>
        mask = torch.zeros(L, L, dtype=torch.bool, device=tokens.device)
        mask[: 1 + S, 1 + S :] = True  # <SPE> and image: not the caption
        mask[1 + S :, 1 + S :] = torch.ones(
            T, T, dtype=torch.bool, device=tokens.device
        ).triu(1)  # caption: itself and earlier tokens
        pad = torch.cat(
            [prefix.new_zeros(N, S, dtype=torch.bool), prefix == PAD], dim=1
        )
        out = self.decoder(
            tokens,
            modality,
            self.task_index[task],
            attn_mask=mask,
            key_padding_mask=pad,
        )
        return out[:, 1 + S :]

    # -------------------------------------------------------------- losses
    def _labels(self, data_samples, task: str) -> Tensor:
        labels = []
        num = len(self.task_cfgs[task]['classes'])
        for i, sample in enumerate(data_samples):
            label = sample.get('gt_label', None)
            if label is None:
                raise ValueError(
                    f'UniPerceiverV2: task {task!r} sample {i} has no gt_label'
                )
            label = int(torch.as_tensor(label).reshape(-1)[0])
            if not 0 <= label < num:
                raise ValueError(
                    f'UniPerceiverV2: task {task!r} sample {i} has label '
                    f'{label}, the task {num} classes'
                )
            labels.append(label)
        return torch.tensor(labels, device=self.loss_module.scale.device)

    def loss_classification(self, inputs, data_samples, task) -> Tensor:
        images = self.represent_images(inputs, task)
        labels = self._labels(data_samples, task)
        classes = self.class_candidates(task, labels)
        return self.loss_module(images, classes, labels)

    def loss_retrieval(self, inputs, data_samples, task) -> Tensor:
        images = self.represent_images(inputs, task)
        texts = self.represent_texts(
            one_caption_each(data_samples, 'UniPerceiverV2'), task
        )
        N = images.shape[0]
        rank, world = get_dist_info()
        gather = self.task_cfgs[task]['gather'] and world > 1
        all_images = all_gather_with_grad(images) if gather else images
        all_texts = all_gather_with_grad(texts) if gather else texts
        if all_texts.shape[0] < 2:
            raise ValueError(
                f'task {task!r}: a global retrieval batch of '
                f'{all_texts.shape[0]} pair: with no other candidate the '
                'loss is 0 (use batches of 2 or more)'
            )
        targets = torch.arange(N, device=images.device)
        if gather:
            targets = targets + rank * N
        i2t = self.loss_module(images, all_texts, targets)
        t2i = self.loss_module(texts, all_images, targets)
        return (i2t + t2i) / 2

    def loss_captioning(self, inputs, data_samples, task) -> Tensor:
        ids, pad = self.encode_texts(
            one_caption_each(data_samples, 'UniPerceiverV2')
        )
        outputs = self.caption_outputs(
            self.image_tokens(inputs), ids[:, :-1], task
        )
        # vocabulary ids -> candidate indices (padding: weight 0)
        words = self.word_ids()
        index = torch.zeros(
            self.text_encoder.vocab_size, dtype=torch.long, device=ids.device
        )
        index[words] = torch.arange(len(words), device=ids.device)
        targets = index[ids[:, 1:]]
        weight = (~pad[:, 1:]).to(outputs.dtype)
        vocab = self.vocab_candidates(task, targets[~pad[:, 1:]])
        return self.loss_module(
            outputs.flatten(0, 1),
            vocab,
            targets.flatten(),
            weight.flatten(),
        )

    def loss_regions(
        self, inputs, data_samples, task
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Detection / instance segmentation: the NLL of the matched
        proposals' classes over the class names, and the proposal stage's
        own losses.

        Our choices (the paper is silent): the proposals matched to a
        ground-truth instance by the proposal stage's Hungarian matching
        (last decoder layer) take its class as the target; unmatched
        (background) proposals do not enter the class objective -- the
        stage's objectness loss already pushes them to "no object". A batch
        without instances gives a zero class loss (its proposal losses
        still train "no object").
        """
        num = len(self.task_cfgs[task]['classes'])
        maps = self.backbone_maps(inputs)
        proposals = self.proposer(maps, data_samples)
        stage_losses, matches = self.proposer.loss(
            proposals, data_samples, name=f'UniPerceiverV2 task {task!r}'
        )
        regions = self.region_outputs(maps, proposals, task)
        picked, targets = [], []
        for i, (pos, gt_index) in enumerate(matches):
            labels = data_samples[i].gt_instances.labels.to(regions.device)
            if len(labels) and not (
                0 <= int(labels.min()) and int(labels.max()) < num
            ):
                raise ValueError(
                    f'UniPerceiverV2: task {task!r} sample {i} has labels '
                    f'{labels.tolist()}, the task {num} class names (does '
                    "the dataset's class list match tasks.{task}.classes?)"
                )
            picked.append(regions[i, pos])
            targets.append(labels[gt_index])
        picked = torch.cat(picked)
        if len(picked) == 0:
            return regions.sum() * 0.0, stage_losses
        targets = torch.cat(targets)
        nll = self.loss_module(
            picked, self.class_candidates(task, targets), targets
        )
        return nll, stage_losses

    def loss(self, inputs: Tensor, data_samples: list, task: str) -> dict:
        """``{'<task>.loss': w_k * NLL_k, 'logit_scale': 1 / τ}``; region
        tasks add the proposal stage's losses ``'<task>.proposal.<name>'``,
        also times ``w_k``."""
        if data_samples is None or len(data_samples) != len(inputs):
            raise ValueError(
                'UniPerceiverV2: loss needs one data sample per image'
            )
        cfg = self.task_cfgs[task]
        w = cfg['loss_weight']
        extra = {}
        if cfg['type'] in REGION_TASKS:
            nll, stage = self.loss_regions(inputs, data_samples, task)
            extra = {f'{task}.proposal.{k}': w * v for k, v in stage.items()}
        else:
            nll = getattr(self, f'loss_{cfg["type"]}')(
                inputs, data_samples, task
            )
        return {
            f'{task}.loss': w * nll,
            **extra,
            'logit_scale': self.loss_module.scale.detach(),
        }

    # ---------------------------------------------------------- prediction
    def generate(self, inputs: Tensor, task: str) -> Tensor:
        """Generated ids (N, T) (no ``<bos>``; ``<pad>`` after ``<eos>``)."""
        cfg = self.task_cfgs[task]['decode_cfg']
        image = self.image_tokens(inputs)
        vocab = self.vocab_candidates(task)
        words = self.word_ids()
        V = self.text_encoder.vocab_size
        beams = cfg['beam_size'] if cfg['mode'] == 'beam' else 1
        expanded = image.repeat_interleave(beams, dim=0)

        eos_col = (words == EOS).nonzero()[:, 0]

        def step(prefix: Tensor, cache):
            img = expanded if prefix.shape[0] == expanded.shape[0] else image
            out = self.caption_outputs(img, prefix, task)[:, -1]
            logits = self.loss_module.logits(out, vocab)
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

    def predict(
        self, inputs: Tensor, data_samples: Optional[list], task: str
    ) -> list:
        """Per task type, in each data sample: ``pred_score`` /
        ``pred_label`` (classification, for mmpretrain's ``Accuracy``),
        ``img_embed`` / ``text_embeds`` of all its captions (retrieval,
        for ``RetrievalMetric``), ``pred_caption`` (captioning, for
        ``CaptionMetric``)."""
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(inputs))]
        kind = self.task_cfgs[task]['type']
        if kind in REGION_TASKS:
            return self.predict_regions(inputs, data_samples, task)
        if kind == 'classification':
            logits = self.loss_module.logits(
                self.represent_images(inputs, task),
                self.class_candidates(task),
            )
            scores = logits.softmax(-1)
            for i, sample in enumerate(data_samples):
                if hasattr(sample, 'set_pred_score'):
                    sample.set_pred_score(scores[i])
                    sample.set_pred_label(scores[i].argmax())
                else:
                    sample.set_field(scores[i], 'pred_score')
                    sample.set_field(scores[i].argmax(), 'pred_label')
        elif kind == 'retrieval':
            images = self.represent_images(inputs, task)
            caps = [
                sample_captions(s, i, 'UniPerceiverV2')
                for i, s in enumerate(data_samples)
            ]
            flat = [c for cs in caps for c in cs]
            texts = self.represent_texts(flat, task)
            per_image = texts.split([len(cs) for cs in caps])
            for i, sample in enumerate(data_samples):
                sample.set_field(images[i], 'img_embed')
                sample.set_field(per_image[i], 'text_embeds')
        else:
            texts = self.tokenizer.decode(self.generate(inputs, task))
            for sample, text in zip(data_samples, texts):
                sample.set_field(text, 'pred_caption')
        return data_samples

    @torch.no_grad()
    def predict_regions(
        self, inputs: Tensor, data_samples: list, task: str
    ) -> list:
        """``pred_instances`` (``bboxes`` xyxy, ``labels``, ``scores``, and
        ``masks`` for instance segmentation) at each image's ``ori_shape``,
        for mmdet's ``CocoMetric``.

        Score of (proposal q, class c) (our choice, Mask2Former's instance
        scoring with its class probability replaced):
        ``objectness_q * P(c | q) * mask_score_q``, ``P`` the softmax of
        ``cos / τ`` over the class names, ``mask_score`` the mean mask
        probability inside the binary mask (Mask2Former's). The top
        ``max_per_image`` (proposal, class) pairs are kept (fewer when the
        image has fewer pairs); with ``topk`` only that many proposals,
        the most object-like, reach the decoder. Masks: the logits
        upsampled to the padded batch, cropped to ``img_shape``, resized to
        ``ori_shape``, > 0; boxes: their tight boxes, or, for a stage with a
        box branch (``proposer.box_from_masks`` False: MaskDINO-like), the
        branch's boxes (normalised by ``img_shape``) rescaled to
        ``ori_shape``.
        """
        cfg = self.task_cfgs[task]
        if not data_samples or 'batch_input_shape' not in (
            data_samples[0].metainfo
        ):
            raise ValueError(
                f'UniPerceiverV2: task {task!r} predicts boxes and masks at '
                "each image's ori_shape: it needs the data samples with "
                "their metainfo ('batch_input_shape', 'img_shape', "
                "'ori_shape'; DetDataPreprocessor sets the first)"
            )
        maps = self.backbone_maps(inputs)
        proposals = self.proposer(maps, data_samples)
        objectness = proposals['objectness']  # N, Q
        index = None
        if cfg['topk'] is not None:
            index = objectness.topk(cfg['topk'], dim=1).indices
            objectness = objectness.gather(1, index)
        regions = self.region_outputs(maps, proposals, task, index)
        probs = self.loss_module.logits(
            regions.flatten(0, 1), self.class_candidates(task)
        ).softmax(-1)
        K = probs.shape[-1]
        probs = probs.view(*regions.shape[:2], K)
        masks, boxes = proposals['mask_logits'], proposals['boxes']
        if index is not None:
            masks = masks[
                torch.arange(len(index), device=index.device)[:, None], index
            ]
            boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        from_masks = getattr(self.proposer, 'box_from_masks', True)
        pad_h, pad_w = data_samples[0].metainfo['batch_input_shape']
        masks = F.interpolate(
            masks, size=(pad_h, pad_w), mode='bilinear', align_corners=False
        )
        for i, sample in enumerate(data_samples):
            scores = objectness[i][:, None] * probs[i]  # Q', K
            keep = min(cfg['max_per_image'], scores.numel())
            top, flat = scores.flatten().topk(keep)
            query, label = flat // K, flat % K
            h, w = sample.metainfo['img_shape'][:2]
            logits = masks[i, query, :h, :w][None]
            oh, ow = sample.metainfo['ori_shape'][:2]
            logits = F.interpolate(
                logits, size=(oh, ow), mode='bilinear', align_corners=False
            )[0]
            binary = logits > 0
            mask_score = (logits.sigmoid() * binary).flatten(1).sum(1) / (
                binary.flatten(1).sum(1) + 1e-6
            )
            if from_masks:
                bboxes = masks_to_boxes(binary)
            else:
                bboxes = bbox_cxcywh_to_xyxy(boxes[i, query])
                bboxes = bboxes * bboxes.new_tensor([w, h, w, h])
                sx, sy = sample.metainfo.get('scale_factor', (1.0, 1.0))
                bboxes = bboxes / bboxes.new_tensor([sx, sy, sx, sy])
                bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, ow)
                bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, oh)
            result = InstanceData(
                bboxes=bboxes,
                labels=label,
                scores=top * mask_score,
            )
            if cfg['type'] == 'instance_segmentation':
                result.masks = binary
            sample.pred_instances = result
        return data_samples

    def forward(
        self,
        inputs: Tensor,
        data_samples: Optional[list] = None,
        mode: str = 'tensor',
        task: Optional[str] = None,
    ) -> Union[dict, list, Tensor]:
        if task is None:
            raise ValueError(
                'UniPerceiverV2 needs the task of the batch: train and '
                'evaluate it with the multi-task loops and '
                'MultiTaskDataPreprocessor'
            )
        if task not in self.task_cfgs:
            raise KeyError(f'no task {task!r} (tasks: {self.tasks})')
        if mode == 'loss':
            return self.loss(inputs, data_samples, task)
        if mode == 'predict':
            return self.predict(inputs, data_samples, task)
        if mode == 'tensor':
            return self.represent_images(inputs, task)
        raise ValueError(f'mode must be loss, predict or tensor, got {mode!r}')
