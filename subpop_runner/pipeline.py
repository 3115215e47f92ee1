"""One experiment = the paper's six steps (see DESIGN.md): split, select, poison, defend,
train, measure. `run(cfg)` is what the CLI and the tests call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.errors import ConfigError
from subpop_runner.metrics import subpop_table, summarize
from subpop_runner.tracking import flatten

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


def run(cfg: DictConfig, run_name: str = "run", sweep_dir: str | None = None) -> Result:
    """Everything that can be wrong with the input is checked before the MLflow run exists."""
    dataset, selector, attack = (build(cfg, k) for k in ("dataset", "selector", "attack"))
    tracker = build(cfg, "tracking")
    tracker.check()
    splits = dataset.load(cfg.seed)  # 1. split
    selector.check(splits)

    from subpop_runner.training import train_victims  # imports Lightning: only once work starts

    train = partial(
        train_victims,
        model=build(cfg, "model"),
        trainer=build(cfg, "trainer"),
        seed=cfg.seed,
        batched=cfg.training.batched,
        memory_mb=cfg.training.memory_mb,
    )
    no_poison = [PoisonSet.empty(splits.n_features)]
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    with tracker.job_run(cfg.name, run_name, params, sweep_dir) as mlflow_run:
        clean = train(splits.train, no_poison, description="clean victim")
        clean_proba_aux = clean.predict_proba(splits.aux.x)[0]
        surrogate = (
            train(splits.aux, no_poison, description="surrogate on aux")
            if selector.uses_surrogate
            else None
        )
        selection = selector.select(splits, clean_proba_aux, surrogate)  # 2. select
        log.info(
            "%d candidate subpopulations, %d attacked, %d without test points",
            len(selection.candidates),
            len(selection.attacked),
            selection.count("no test points"),
        )
        poison_sets = [
            attack.poison(s, splits.aux, clean_proba_aux, cfg.seed)  # 3. poison
            for s in selection.attacked
        ]
        # 4. defend: no defense family is configured yet; victims train on train ∪ poison.
        poisoned = train(splits.train, poison_sets, description="poisoned victims")  # 5. train
        clean_pred = clean.predict(splits.test.x)[0]  # 6. measure
        table = subpop_table(
            selection, poison_sets, clean_pred, poisoned.predict(splits.test.x), splits.test.y
        )
        summary = summarize(table, float((clean_pred == splits.test.y).mean()))
        mlflow_run.log_metrics(summary)
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
