"""One experiment = the paper's six steps (see DESIGN.md): split, select, poison, defend,
train, measure. `run(cfg)` is what the CLI and the tests call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.data.splits import Splits
from subpop_runner.errors import ConfigError
from subpop_runner.metrics import subpop_table, summarize
from subpop_runner.selectors.base import PARTS
from subpop_runner.tracking import flatten

if TYPE_CHECKING:
    from subpop_runner.training import Victims

log = logging.getLogger(__name__)


@dataclass
class Result:
    summary: dict[str, float]
    subpops: pd.DataFrame
    run_id: str


def build(cfg: DictConfig, key: str) -> object:
    """Instantiate one component; a bad setting becomes one `ConfigError` naming the group."""
    log.info("Instantiating %s <%s>", key, cfg[key].get("_target_"))
    try:
        return instantiate(cfg[key])
    except InstantiationException as error:
        cause = error.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"cannot build {key} from its config: {cause or error}") from None


def probe(factory: object, key: str, **kwargs: object) -> None:
    """Call a partially built component once, so that a bad option fails before any run."""
    try:
        factory(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot build {key} from its config: {error}") from None


def run(cfg: DictConfig, run_name: str = "run", sweep_dir: str | None = None) -> Result:
    """Everything that can be wrong with the input is checked before the MLflow run exists."""
    dataset, selector, attack = (build(cfg, k) for k in ("dataset", "selector", "attack"))
    tracker, stages = build(cfg, "tracking"), build(cfg, "cache")
    tracker.check()
    splits = dataset.load(cfg.seed)  # 1. split
    selector.check(splits)
    train = victim_trainer(cfg, splits)
    # What the clean victim, surrogate and clustering depend on: their cache key.
    upstream = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("dataset", "model", "trainer")
    } | {"seed": cfg.seed}

    def memo(stage: str, parts: dict, compute: Callable[[], dict]) -> dict:
        return stages.get(stage, upstream | parts, compute)

    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    with tracker.job_run(cfg.name, run_name, params, sweep_dir) as mlflow_run:
        clean = memo("clean_victim", {}, lambda: clean_victim(train, splits))
        features = (
            memo("surrogate", {}, lambda: surrogate_features(train, splits))
            if selector.uses_surrogate
            else {p: getattr(splits, p).x for p in PARTS}
        )
        # 2. select (the clean victim ranks subpopulations; the surrogate gives ClusterMatch
        # its representation)
        selection = selector.select(splits, clean["proba_aux"], features, memo)
        log.info(
            "%d candidate subpopulations, %d attacked, %d without test points",
            len(selection.candidates),
            len(selection.attacked),
            selection.count("no test points"),
        )
        # 3. poison
        poison_sets = [
            attack.poison(s, splits.aux, clean["proba_aux"], cfg.seed) for s in selection.attacked
        ]
        # 4. defend: no defense family is configured yet; victims train on train ∪ poison.
        # 5. train
        poisoned = train(splits.train, poison_sets, description="poisoned victims")
        # 6. measure
        predictions = poisoned.predict(splits.test.x)
        table = subpop_table(
            selection, poison_sets, clean["pred_test"], predictions, splits.test.y
        )
        summary = summarize(table, float((clean["pred_test"] == splits.test.y).mean()))
        mlflow_run.log_metrics(summary)
        mlflow_run.set_tags(stages.tags())
        mlflow_run.log_files(
            {
                "subpops.csv": table,
                "poison.csv": provenance(poison_sets),
                "config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
            }
        )
    log.info(
        "clean accuracy %.3f; target damage worst-1/5/10: %.3f / %.3f / %.3f",
        summary["clean_accuracy"],
        summary["target_damage/worst1"],
        summary["target_damage/worst5"],
        summary["target_damage/worst10"],
    )
    return Result(summary, table, mlflow_run.run_id)


def victim_trainer(cfg: DictConfig, splits: Splits) -> Callable[..., Victims]:
    """`train_victims` bound to the configured model and trainer, both checked by a dry call."""
    from subpop_runner.training import train_victims  # imports Lightning: only once work starts

    if not isinstance(cfg.training.batched, bool):
        raise ConfigError(f"training.batched must be true or false, got {cfg.training.batched!r}")
    if not cfg.training.memory_mb > 0:
        raise ConfigError(f"training.memory_mb must be > 0, got {cfg.training.memory_mb}")

    model, trainer = build(cfg, "model"), build(cfg, "trainer")
    probe(model, "model", n_features=splits.n_features, n_classes=splits.n_classes)
    probe(trainer, "trainer", logger=False)
    return partial(
        train_victims,
        model=model,
        trainer=trainer,
        seed=cfg.seed,
        batched=cfg.training.batched,
        memory_mb=cfg.training.memory_mb,
    )


def clean_victim(train: Callable[..., Victims], splits: Splits) -> dict[str, np.ndarray]:
    """The victim trained on D alone: its confidence on aux (ranking, flip label) and its test
    predictions (the damage baseline)."""
    clean = train(splits.train, [PoisonSet.empty(splits.n_features)], description="clean victim")
    return {
        "proba_aux": clean.predict_proba(splits.aux.x)[0],
        "pred_test": clean.predict(splits.test.x)[0],
    }


def surrogate_features(train: Callable[..., Victims], splits: Splits) -> dict[str, np.ndarray]:
    """ClusterMatch's representation: hidden layer of a model trained on the aux set only."""
    surrogate = train(
        splits.aux, [PoisonSet.empty(splits.n_features)], description="surrogate on aux"
    )
    return {part: surrogate.hidden(getattr(splits, part).x)[0] for part in PARTS}


def provenance(poison_sets: list[PoisonSet]) -> pd.DataFrame:
    """Every poison point: its subpopulation, the aux row it copies, and its label."""
    return pd.DataFrame(
        {
            "subpop_id": np.concatenate(
                [np.full(len(p), p.subpop_id) for p in poison_sets] or [[]]
            ),
            "aux_index": np.concatenate([p.source_index for p in poison_sets] or [[]]),
            "label": np.concatenate([p.y for p in poison_sets] or [[]]),
        }
    )
