"""`make bench`, text: what sizes the CPU text presets; writes docs/performance_text.md.

1. BERT-LL's cache: seconds per 1,000 reviews for the frozen blocks' one pass, and for one
   training epoch of the last block + classifier on the cached states vs the same training
   recomputing the whole encoder (`BertClassifier(trainable="last_block")`).
2. The learning rate of the CPU BERT-LL preset: test accuracy of a clean BERT-LL victim after
   the preset's epochs at the paper's 1e-5 and at larger rates, next to the head-only option
   (a linear head on frozen mean-pooled features, the paper's LL-head recipe).
3. The same for the CPU BERT-FT preset (every block trained, 500 reviews per part, 1 epoch).

Everything runs through the training layer the pipeline uses, on the real IMDB train reviews
(offline copy) and the offline MiniLM-L6 encoder.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from benchmarks.page import write_page
from subpop_runner.data.imdb import IMDB
from subpop_runner.models.bert import (
    BertBelowLastBlock,
    BertClassifier,
    BertEncoder,
    BertLastBlock,
)
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.training.base import Fit
from subpop_runner.training.end_to_end import EndToEnd
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.types import Part, PoisonSet, Splits

ROOT = Path(__file__).resolve().parent.parent
ENCODER = "minilm-l6"
MAX_LENGTH = 128


def trainer(epochs: int) -> partial:
    return partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=epochs)


def no_poison(splits: Splits) -> list[PoisonSet]:
    return [PoisonSet.empty(splits.train.x.shape[1:])]


def bert_recipe(rate: float, epochs: int, **parts: object) -> EndToEnd:
    """The paper's BERT recipe (AdamW decayed linearly, batch 8) at learning rate ``rate``."""
    return EndToEnd(
        learning_rate=rate,
        batch_size=8,
        epochs=epochs,
        optimizer="adamw",
        schedule="linear",
        **parts,
    )


def cache_section(splits: Splits, n: int) -> list[str]:
    part = Part(splits.train.x[:n], splits.train.y[:n])
    fit = Fit(trainer(1), seed=0, batched=False, splits=splits)
    front = BertBelowLastBlock(name=ENCODER)
    cached = bert_recipe(1e-5, 1, network=partial(BertLastBlock, name=ENCODER), frozen=front)
    start = time.perf_counter()
    cached._frozen(part.x, fit)
    frozen_pass = time.perf_counter() - start
    start = time.perf_counter()
    cached.fit(part, no_poison(splits), fit)
    last_block = time.perf_counter() - start
    recompute = bert_recipe(
        1e-5, 1, network=partial(BertClassifier, name=ENCODER, trainable="last_block")
    )
    start = time.perf_counter()
    recompute.fit(part, no_poison(splits), fit)
    whole = time.perf_counter() - start
    per = 1000 / n
    table = pd.DataFrame(
        [
            {
                "what": "frozen blocks, once per review (fp32 forward)",
                "s per 1,000": frozen_pass * per,
            },
            {
                "what": "one epoch: last block + classifier on cached states",
                "s per 1,000": last_block * per,
            },
            {"what": "one epoch: same, recomputing the whole encoder", "s per 1,000": whole * per},
        ]
    ).round(1)
    return [
        f"{n:,} reviews at {MAX_LENGTH} tokens, batch 8, AdamW, one victim, one epoch; MiniLM-L6 "
        f"(6 blocks, hidden 384). Training on the cache is {whole / last_block:.1f}x faster per "
        f"epoch than recomputing; with E epochs and V victims (plus the clean victim and the "
        f"surrogate) the frozen pass is paid once instead of E·V times.",
        "",
        table.to_markdown(index=False),
    ]


def clean_victim(regime: object, splits: Splits, fit: Fit, model: str) -> dict:
    """Test accuracy and training seconds of one clean victim."""
    start = time.perf_counter()
    victims = regime.fit(splits.train, no_poison(splits), fit)
    seconds = time.perf_counter() - start
    accuracy = float((victims.predict(splits.test.x)[0] == splits.test.y).mean())
    return {"model": model, "test accuracy": accuracy, "train s": seconds}


def learning_rate_section(splits: Splits, epochs: int, rates: tuple[float, ...]) -> list[str]:
    fit = Fit(trainer(epochs), seed=0, batched=False, splits=splits)
    front = BertBelowLastBlock(name=ENCODER)
    network = partial(BertLastBlock, name=ENCODER)
    rows = [
        clean_victim(
            bert_recipe(rate, epochs, network=network, frozen=front),
            splits,
            fit,
            f"BERT-LL, lr {rate:g}",
        )
        for rate in rates
    ]
    head = FixedFeatures(head=LinearHead, backbone=BertEncoder(name=ENCODER), batch_size=64)
    head_fit = Fit(trainer(12), seed=0, splits=splits)
    rows.append(clean_victim(head, splits, head_fit, "head-only (features + 12 epochs)"))
    return [
        f"A clean victim on {len(splits.train):,} train reviews, tested on {len(splits.test):,} "
        f"({MAX_LENGTH} tokens), BERT-LL trained {epochs} epoch(s) with AdamW decayed linearly; "
        "the head-only option for reference (its time includes computing the features):",
        "",
        pd.DataFrame(rows).round(3).to_markdown(index=False),
    ]


def fine_tuning_section(
    splits: Splits, n: int, epochs: int, rates: tuple[float, ...]
) -> list[str]:
    """The CPU BERT-FT preset's setting: every block trained, ``n`` reviews per part."""
    small = Splits(
        *(Part(part.x[:n], part.y[:n]) for part in (splits.train, splits.aux, splits.test)),
        class_names=splits.class_names,
        vocabulary=splits.vocabulary,
    )
    fit = Fit(trainer(epochs), seed=0, batched=False, splits=small)
    network = partial(BertClassifier, name=ENCODER, trainable="all")
    rows = [
        clean_victim(
            bert_recipe(rate, epochs, network=network), small, fit, f"BERT-FT, lr {rate:g}"
        )
        for rate in rates
    ]
    return [
        f"A clean victim fine-tuned whole on {n:,} train reviews, tested on {n:,} ({MAX_LENGTH} "
        f"tokens), {epochs} epoch(s), AdamW decayed linearly:",
        "",
        pd.DataFrame(rows).round(3).to_markdown(index=False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance_text.md"))
    parser.add_argument("--rows", type=int, default=3000, help="reviews in all (a third each)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    splits = IMDB(tokenizer=ENCODER, max_length=MAX_LENGTH, max_rows=args.rows).load(seed=0)
    sections = {
        "BERT-LL: cached frozen blocks vs recomputing the encoder": cache_section(
            splits, min(400, len(splits.train))
        ),
        "Learning rate of the CPU BERT-LL preset": learning_rate_section(
            splits, args.epochs, (1e-5, 1e-4, 3e-4)
        ),
        "Learning rate of the CPU BERT-FT preset": fine_tuning_section(
            splits, min(500, len(splits.train)), 1, (1e-5, 3e-5, 1e-4)
        ),
    }
    data = f"the real IMDB train reviews (offline copy), {len(splits.train):,} per part"
    write_page("Performance: text", "benchmarks/text.py", started, data, sections, args.out)


if __name__ == "__main__":
    torch.manual_seed(0)
    np.random.seed(0)
    main()
