"""One experiment = the paper's six steps (see docs/architecture.md): split, select, poison,
defend, train, measure. `run(cfg)` is what the CLI, the sweeper's jobs and the tests call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from subpop_runner.attacks.base import check_memory
from subpop_runner.attacks.domain import InputDomain, distances
from subpop_runner.defenses.base import RowOrder
from subpop_runner.errors import ConfigError
from subpop_runner.identity import inputs, job_key, stage_code
from subpop_runner.metrics import defense_details, subpop_table, summarize, with_defense
from subpop_runner.schema import plain
from subpop_runner.stages import clean_victim, surrogate_features
from subpop_runner.tracking import JOB_KEY, JobInfo, experiment_name, flatten
from subpop_runner.types import Part, PoisonSet, Splits

if TYPE_CHECKING:
    from subpop_runner.attacks.label_flip import LabelFlip
    from subpop_runner.attacks.optimization import Optimized
    from subpop_runner.memo import Memo
    from subpop_runner.training.victims import Victims
    from subpop_runner.types import Subpopulation

log = logging.getLogger(__name__)


@dataclass
class Result:
    summary: dict[str, float]
    subpops: pd.DataFrame
    run_id: str


def build(cfg: DictConfig, key: str) -> object:
    """Instantiate one component; a failure becomes one `ConfigError` naming the group."""
    log.info("Instantiating %s <%s>", key, cfg[key].get("_target_"))
    try:
        return instantiate(cfg[key])
    except InstantiationException as error:
        cause = error.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{key}: cannot build it from its config ({cause or error})") from None


def run(cfg: DictConfig, job: JobInfo | None = None) -> Result | None:
    """Everything that can be wrong with the input is checked before the MLflow run exists
    (for a sweep's job, a FAILED run records it); ``cfg`` has passed
    `subpop_runner.schema.validate` (the CLI and the sweeper see to that). None: a sweep's job
    skipped because a run of the same identity finished or runs elsewhere."""
    started = time.perf_counter()
    job = job or JobInfo(experiment_name(cfg), cfg.name or "run", {})
    dataset, selector, attack = (build(cfg, k) for k in ("dataset", "selector", "attack"))
    defense = build(cfg, "defense") if "_target_" in cfg.defense else None
    tracker, stages = build(cfg, "tracking"), build(cfg, "cache")
    stages.check()
    splits = dataset.load(cfg.seed)  # 1. split
    data_files = dataset.fingerprint()
    params = flatten(plain(cfg))
    if hasattr(defense, "oracle_m"):
        params["defense.oracle_m"] = str(defense.oracle_m).lower()
    tags = job.tags | {JOB_KEY: job_key(cfg, data_files)}
    if not cfg.dataset.verify:
        tags["dataset.verify"] = "false"
    regime = checked_model(cfg, splits, selector, attack, defense, tracker, job, params, tags)
    tracker.check()
    # What the clean victim, surrogate and clustering depend on, besides their own parts.
    upstream = inputs(cfg, data_files)

    def memo(stage: str, parts: dict, compute: Callable[[], dict], mapped: bool = False) -> dict:
        code = stage_code(cfg, stage)
        return stages.get(stage, upstream | parts, compute, code=code, mapped=mapped)

    train = victim_trainer(cfg, regime, memo, splits)
    # A model may name the regime its surrogate trains with (the scikit-learn reference
    # clusters on the batched MLP's surrogate, so both learners meet the same subpopulations).
    surrogate = victim_trainer(cfg, regime.surrogate or regime, memo, splits)
    run_id = tracker.start_job(
        job.experiment, job.run_name, tags, job.parent_run_id, skip_taken=job.resume
    )
    if run_id is None:
        return None
    with tracker.job_run(run_id, params) as run:
        clean = memo("clean_victim", {}, lambda: clean_victim(train, splits))
        features = selector.features(
            splits,
            lambda layer: memo(
                "surrogate", {"layer": layer}, lambda: surrogate_features(surrogate, splits, layer)
            ),
            memo,
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
        poisons = poison(attack, selection.attacked, splits, train, cfg.seed, cfg.training)
        poison_sets, optimized = poisons.sets, poisons.optimized
        # 4. defend and 5. train: every victim trains on train ∪ its poison; a defense starts
        # from those victims (TRIM's first model, the one the others inspect), sees their rows
        # without provenance, and trains the defended victims on the rows it keeps.
        # A defender's clean holdout (fine-pruning) comes out of the test part, and out of
        # every metric of this run, the undefended ones included.
        measured = np.ones(len(splits.test), bool)
        if hasattr(defense, "holdout"):
            measured[defense.holdout(len(splits.test), cfg.seed)] = False
        training = time.perf_counter()
        poisoned = train(splits.train, poison_sets, description="poisoned victims")
        train_seconds = time.perf_counter() - training
        defended = None
        if defense is not None:
            order = RowOrder(
                (splits.train.x, splits.train.y), [(p.x, p.y) for p in poison_sets], cfg.seed
            )
            rows = order.view(
                splits.n_classes,
                removal_budget=[len(p) for p in poison_sets],
                train=partial(train, splits.train, poison_sets, description="defended victims"),
                holdout=(splits.test.x[~measured], splits.test.y[~measured]),
            )
            defended = defense(rows, poisoned)
            keep = order.in_training_order(defended.keep)
        # 6. measure
        test = Part(splits.test.x[measured], splits.test.y[measured])
        on_test, clean_pred = selection.on_test_rows(measured), clean["pred_test"][measured]
        predictions = poisoned.predict(test.x)
        table = subpop_table(on_test, poison_sets, clean_pred, predictions, test.y)
        if defended is not None:
            measured_victims = {"defended": defended.victims} | defended.stages
            table = with_defense(
                table,
                on_test,
                poison_sets,
                keep,
                defended,
                clean_pred,
                {name: v.predict(test.x) for name, v in measured_victims.items()},
                test.y,
            )
        summary = summarize(table, float((clean_pred == test.y).mean()))
        if defended is not None:
            summary["defense_seconds"] = defended.seconds
        if optimized is not None:
            summary["attack_seconds"] = poisons.seconds
        seconds = {"job_seconds": time.perf_counter() - started, "train_seconds": train_seconds}
        run.log_metrics(summary | seconds)
        if optimized is not None:
            # The attack's objective per step, averaged over subpopulations (a curve in the UI).
            mean = optimized.trace.groupby("step")["objective"].mean()
            run.log_series("attack_objective", mean.to_numpy())
        run.set_tags(stages.tags() | {"device": poisoned.device})
        files = {
            "subpops.csv": table,
            "poison.csv": provenance(poison_sets, splits.aux),
            "config.yaml": OmegaConf.to_yaml(plain(cfg)),
        }
        if optimized is not None:
            files["attack_trace.csv"] = optimized.trace
        if defended is not None and defended.details:
            files["defense_details.csv"] = defense_details(poison_sets, defended.details)
        run.log_files(files)
    log.info(
        "clean accuracy %.3f; target damage worst-1/5/10: %.3f / %.3f / %.3f",
        summary["clean_accuracy"],
        summary["target_damage/worst1"],
        summary["target_damage/worst5"],
        summary["target_damage/worst10"],
    )
    if defended is not None:
        log.info(
            "defended (%s, %.1f s): worst-5 target damage %.3f -> %.3f; poison found %.2f, "
            "precision %.2f, %.1f%% of rows removed",
            cfg.defense._target_.rsplit(".", 1)[-1],
            defended.seconds,
            summary["target_damage/worst5"],
            summary["defended_target_damage/worst5"],
            summary["poison_found/mean"],
            summary["poison_precision/mean"],
            100 * summary["removed_fraction/mean"],
        )
    return Result(summary, table, run.run_id)


def checked_model(
    cfg: DictConfig,
    splits: Splits,
    selector: object,
    attack: object,
    defense: object,
    tracker: object,
    job: JobInfo,
    params: dict,
    tags: dict,
) -> object:
    """The model's regime, built and checked against the data, and the selector, attack and
    defense against it.
    Bad input found here is a single run's `ConfigError` before any run exists; a sweep's job
    also leaves a FAILED run saying why (the sweeper has checked the store)."""
    try:
        regime = build(cfg, "model")
        regime.check(splits)
        selector.check(splits, regime.layers)
        if hasattr(attack, "check"):
            attack.check(splits, regime)
        if defense is not None:
            defense.check(len(splits.train), regime)
    except ConfigError as error:
        if job.parent_run_id is not None:
            tracker.failed_run(
                job.experiment, job.run_name, params, tags, job.parent_run_id, error
            )
        raise
    return regime


def victim_trainer(
    cfg: DictConfig, regime: object, memo: Memo, splits: Splits
) -> Callable[..., Victims]:
    """The model's training regime bound to the configured trainer, seed and cache:
    ``train(part, poison_sets, description=…)`` returns `Victims`."""
    from subpop_runner.training.base import Fit  # imports Lightning: only once work starts

    fit = Fit(
        trainer=build(cfg, "trainer"),
        seed=cfg.seed,
        batched=cfg.training.batched,
        memory_mb=cfg.training.memory_mb,
        memo=memo,
        splits=splits,
    )
    return partial(regime.fit, fit=fit)


@dataclass
class Poisons:
    """Step 3's result: one poison set per attacked subpopulation; an optimising attack's
    trace (else None) and its seconds."""

    sets: list[PoisonSet]
    optimized: Optimized | None = None
    seconds: float = 0.0


def poison(
    attack: LabelFlip,
    subpops: list[Subpopulation],
    splits: Splits,
    train: Callable[..., Victims],
    seed: int,
    training: DictConfig,
) -> Poisons:
    """3. poison, from what the attacker has (the threat model, paper Sec. 3): D_aux, each
    subpopulation's aux members, and a model of the victim's family trained on D_aux alone.
    The victim's training rows and the test rows are not passed on: `attacker_view`."""
    check_memory([attack.budget(s) for s in subpops], splits.aux.x[:1].nbytes, training.memory_mb)
    known = attacker_view(splits)
    subpops = [replace(s, train=s.train[:0], test=s.test[:0]) for s in subpops]
    attacker = None
    if attack.uses_model:
        attacker = train(
            known.aux,
            [PoisonSet.empty(known.input_shape)],
            description="attacker's model on aux",
        )
    proba = None if attacker is None else attacker.predict_proba(known.aux.x)[0]
    sets = [attack.poison(s, known.aux, known.n_classes, seed, proba) for s in subpops]
    if not attack.optimizes:
        return Poisons(sets)
    # GO / INF move the label-flip poisons on the attacker's model.
    started = time.perf_counter()
    optimized = attack.optimize(
        sets, subpops, attacker, known.aux, InputDomain.of(known, attack.epsilon)
    )
    return Poisons(optimized.poison_sets, optimized, time.perf_counter() - started)


def attacker_view(splits: Splits) -> Splits:
    """The splits as the attacker knows them: D_aux, with the training and test parts empty
    (their shapes kept)."""
    empty = [Part(p.x[:0], p.y[:0]) for p in (splits.train, splits.test)]
    return replace(splits, train=empty[0], test=empty[1])


def provenance(poison_sets: list[PoisonSet], aux: Part) -> pd.DataFrame:
    """Every poison point: its subpopulation, the aux row it started as, its label, and how
    far an optimising attack moved it from that row (L2 and L∞; zero for label flipping)."""
    moved = [distances(p.x, aux.x[p.source_index]) for p in poison_sets]
    return pd.DataFrame(
        {
            "subpop_id": np.concatenate(
                [np.full(len(p), p.subpop_id) for p in poison_sets] or [[]]
            ),
            "aux_index": np.concatenate([p.source_index for p in poison_sets] or [[]]),
            "label": np.concatenate([p.y for p in poison_sets] or [[]]),
            "moved_l2": np.concatenate([m[0] for m in moved] or [[]]),
            "moved_linf": np.concatenate([m[1] for m in moved] or [[]]),
        }
    )
