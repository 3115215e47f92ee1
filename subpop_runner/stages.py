"""The cached stages: what the clean victim and the surrogate compute, and which code each
stage runs (its cache key covers exactly that code; see `subpop_runner.cache`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.data.splits import Splits
from subpop_runner.selectors.base import PARTS

if TYPE_CHECKING:
    from subpop_runner.training.base import Victims

# The config groups whose code each stage runs, besides this module and the training layer.
STAGE_GROUPS = {
    "clean_victim": ("dataset", "model"),
    "surrogate": ("dataset", "model"),
    "features": ("dataset", "model"),
    "embedding": ("dataset", "selector"),
    "clustering": ("dataset", "model", "selector"),
}


def stage_code(cfg: DictConfig, stage: str) -> tuple[str, ...]:
    """Modules a stage runs: this one, the training layer, and every class its groups
    instantiate (a model's regime and its nested network, backbone and head)."""
    targets = (t.rsplit(".", 1)[0] for group in STAGE_GROUPS[stage] for t in _targets(cfg[group]))
    return (__name__, "subpop_runner.training.base", *sorted(set(targets)))


def _targets(node: object) -> list[str]:
    """Every ``_target_`` in a config node, nested ones included."""
    if isinstance(node, DictConfig | dict):
        own = [node["_target_"]] if "_target_" in node else []
        nested = (_targets(child) for key, child in node.items() if key != "_target_")
        return own + [target for found in nested for target in found]
    return []


def clean_victim(train: Callable[..., Victims], splits: Splits) -> dict[str, np.ndarray]:
    """The victim trained on D alone: its confidence on aux (ranking, flip label) and its test
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
