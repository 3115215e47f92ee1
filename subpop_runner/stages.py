"""The cached stages: what the clean victim and the surrogate compute (their cache keys:
`subpop_runner.identity`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from subpop_runner.types import PARTS, PoisonSet, Splits

if TYPE_CHECKING:
    from subpop_runner.training.victims import Victims


def clean_victim(train: Callable[..., Victims], splits: Splits) -> dict[str, np.ndarray]:
    """The victim trained on D alone: its confidence on aux (the ranking) and its test
    predictions (the damage baseline)."""
    clean = train(splits.train, [PoisonSet.empty(splits.input_shape)], description="clean victim")
    return {
        "proba_aux": clean.predict_proba(splits.aux.x)[0],
        "pred_test": clean.predict(splits.test.x)[0],
    }


def surrogate_features(
    train: Callable[..., Victims], splits: Splits, layer: str
) -> dict[str, np.ndarray]:
    """ClusterMatch's representation: a layer of a model trained on the aux set only."""
    surrogate = train(
        splits.aux, [PoisonSet.empty(splits.input_shape)], description="surrogate on aux"
    )
    return {part: surrogate.representation(getattr(splits, part).x, layer)[0] for part in PARTS}
