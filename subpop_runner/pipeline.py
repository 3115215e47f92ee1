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

from subpop_runner.attacks.domain import InputDomain, distances
from subpop_runner.attacks.memory import check_memory
from subpop_runner.defenses.base import RowOrder
from subpop_runner.errors import ConfigError
from subpop_runner.identity import inputs, job_key, stage_code
from subpop_runner.metrics import defense_details, subpop_table, summarize, with_defense
from subpop_runner.schema import plain
from subpop_runner.stages import clean_victim, surrogate_features
from subpop_runner.tracking import JOB_KEY, JobInfo, experiment_name, flatten
from subpop_runner.types import Part, PoisonSet, Splits

if TYPE_CHECKING:
    from subpop_runner.attacks.base import Attack
    from subpop_runner.cache import StageCache
    from subpop_runner.data.base import Dataset
    from subpop_runner.defenses.base import Defended, Defense
    from subpop_runner.memo import Memo
    from subpop_runner.selectors.base import Selector
    from subpop_runner.tracking import JobRun, Tracker
    from subpop_runner.training.regime import Regime
    from subpop_runner.training.victims import Victims
    from subpop_runner.types import Selection, Subpopulation

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
    parts = Components(*(build(cfg, group) for group in Components.GROUPS))
    parts.cache.check()
    splits = parts.dataset.load(cfg.seed)  # 1. split
    data_files = parts.dataset.fingerprint()
    params = flatten(plain(cfg)) | parts.defense.logged_params()
    tags = job.tags | {JOB_KEY: job_key(cfg, data_files)}
    if not cfg.dataset.verify:
        tags["dataset.verify"] = "false"
    regime = checked_model(cfg, splits, parts, job, params, tags)
    parts.tracking.check()
    memo = stage_memo(cfg, parts.cache, data_files)
    train = victim_trainer(cfg, regime, memo, splits)
    # A model may name the regime its surrogate trains with (the scikit-learn reference
    # clusters on the batched MLP's surrogate, so both learners meet the same subpopulations).
    surrogate = victim_trainer(cfg, regime.surrogate or regime, memo, splits)
    run_id = parts.tracking.start_job(
        job.experiment, job.run_name, tags, job.parent_run_id, skip_taken=job.resume
    )
    if run_id is None:
        return None
    with parts.tracking.job_run(run_id, params) as run:
        clean = memo("clean_victim", {}, lambda: clean_victim(train, splits))
        selection = select(parts.selector, splits, clean, surrogate, memo)
        poisons = poison(parts.attack, selection.attacked, splits, train, cfg.seed, cfg.training)
        trained = train_victims(splits, poisons.sets, train)
        held_out = parts.defense.holdout(len(splits.test), cfg.seed)
        defended, keep = defend(
            parts.defense, splits, poisons.sets, trained, train, held_out, cfg.seed
        )
        table, summary = measure(
            splits, selection, clean, poisons.sets, trained, defended, keep, held_out
        )
        seconds = {
            "job_seconds": time.perf_counter() - started,
            "train_seconds": trained.seconds,
            "attack_seconds": poisons.seconds,
            "defense_seconds": defended.seconds,
        }
        log_run(run, cfg, splits.aux, table, summary | seconds, poisons, defended)
        run.set_tags(parts.cache.tags() | {"device": trained.victims.device})
    log_summary(summary, defended, cfg.defense._target_)
    return Result(summary, table, run.run_id)


@dataclass
class Components:
    """What one run is built of, one per config group (`GROUPS`, in build order)."""

    GROUPS = ("dataset", "selector", "attack", "defense", "tracking", "cache")

    dataset: Dataset
    selector: Selector
    attack: Attack
    defense: Defense
    tracking: Tracker
    cache: StageCache


def checked_model(
    cfg: DictConfig,
    splits: Splits,
    parts: Components,
    job: JobInfo,
    params: dict,
    tags: dict,
) -> Regime:
    """The model's regime, built and checked against the data, and the selector, attack and
    defense against it.
    Bad input found here is a single run's `ConfigError` before any run exists; a sweep's job
    also leaves a FAILED run saying why (the sweeper has checked the store)."""
    try:
        regime = build(cfg, "model")
        regime.check(splits)
        parts.selector.check(splits, regime.layers)
        parts.attack.check(splits, regime)
        parts.defense.check(len(splits.train), regime)
    except ConfigError as error:
        if job.parent_run_id is not None:
            parts.tracking.failed_run(
                job.experiment, job.run_name, params, tags, job.parent_run_id, error
            )
        raise
    return regime


def stage_memo(cfg: DictConfig, cache: StageCache, data_files: dict[str, str]) -> Memo:
    """``memo(stage, parts, compute)``: a stage's result from the cache, keyed by its identity
    (`subpop_runner.identity`), computed on a miss."""
    # What the clean victim, surrogate and clustering depend on, besides their own parts.
    upstream = inputs(cfg, data_files)

    def memo(stage: str, parts: dict, compute: Callable[[], dict], mapped: bool = False) -> dict:
        code = stage_code(cfg, stage)
        return cache.get(stage, upstream | parts, compute, code=code, mapped=mapped)

    return memo


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


def select(
    selector: Selector,
    splits: Splits,
    clean: dict[str, np.ndarray],
    surrogate: Callable[..., Victims],
    memo: Memo,
) -> Selection:
    """2. select: candidate subpopulations from aux (ClusterMatch on the surrogate's
    representation of aux), ranked by the clean victim's confidence."""
    features = selector.features(
        splits,
        lambda layer: memo(
            "surrogate", {"layer": layer}, lambda: surrogate_features(surrogate, splits, layer)
        ),
        memo,
    )
    selection = selector.select(splits, clean["proba_aux"], features, memo)
    log.info(
        "%d candidate subpopulations, %d attacked, %d without test points",
        len(selection.candidates),
        len(selection.attacked),
        selection.count("no test points"),
    )
    return selection


@dataclass
class Poisons:
    """Step 3's result: one poison set per attacked subpopulation, the attack's trace of its
    objective (no rows for label flipping) and the seconds its optimisation took."""

    sets: list[PoisonSet]
    trace: pd.DataFrame
    seconds: float


def poison(
    attack: Attack,
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
    started = time.perf_counter()
    domain = InputDomain.of(known, attack.epsilon)
    optimized = attack.optimize(sets, subpops, attacker, known.aux, domain)
    return Poisons(optimized.poison_sets, optimized.trace, time.perf_counter() - started)


@dataclass
class Trained:
    """Step 5's undefended victims, one per poison set, and the seconds they took."""

    victims: Victims
    seconds: float


def train_victims(
    splits: Splits, poison_sets: list[PoisonSet], train: Callable[..., Victims]
) -> Trained:
    """5. train: every victim on train ∪ its poison set (the undefended victims: the damage
    *before* a defense, and the start a defense inspects)."""
    started = time.perf_counter()
    victims = train(splits.train, poison_sets, description="poisoned victims")
    return Trained(victims, time.perf_counter() - started)


def defend(
    defense: Defense,
    splits: Splits,
    poison_sets: list[PoisonSet],
    trained: Trained,
    train: Callable[..., Victims],
    held_out: np.ndarray,
    seed: int,
) -> tuple[Defended, list[np.ndarray]]:
    """4. defend: the defense starts from the undefended victims (TRIM's first model, the one
    the others inspect), sees each victim's rows without provenance (`RowOrder.view`), owns
    the ``held_out`` test rows, and trains the defended victims on the rows it keeps. Returns
    its result and its keep masks in training order (shared rows, then the victim's poison)."""
    order = RowOrder((splits.train.x, splits.train.y), [(p.x, p.y) for p in poison_sets], seed)

    def retrain(
        keep: list[np.ndarray], relabeled: list | None = None, **start: Victims
    ) -> Victims:
        sets = poison_sets
        if relabeled is not None:  # rows a defense relabeled train as the victim's own
            sets = [p.and_rows(x, y) for p, (x, y) in zip(poison_sets, relabeled, strict=True)]
            keep = [
                np.r_[k, np.ones(len(y), bool)] for k, (_, y) in zip(keep, relabeled, strict=True)
            ]
        return train(splits.train, sets, description="defended victims", keep=keep, **start)

    rows = order.view(
        splits.n_classes,
        removal_budget=[len(p) for p in poison_sets],
        train=retrain,
        holdout=(splits.test.x[held_out], splits.test.y[held_out]),
    )
    defended = defense(rows, trained.victims)
    return defended, order.in_training_order(defended.keep)


def measure(
    splits: Splits,
    selection: Selection,
    clean: dict[str, np.ndarray],
    poison_sets: list[PoisonSet],
    trained: Trained,
    defended: Defended,
    keep: list[np.ndarray],
    held_out: np.ndarray,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """6. measure, on the test rows the defender does not own: each subpopulation's target
    and collateral damage (paper Def. 3.2), with the defense's columns where it changed the
    victims, and the run's summary (worst-k)."""
    measured = np.ones(len(splits.test), bool)
    measured[held_out] = False
    x, y = splits.test.x[measured], splits.test.y[measured]
    on_test, clean_pred = selection.on_test_rows(measured), clean["pred_test"][measured]
    table = subpop_table(on_test, poison_sets, clean_pred, trained.victims.predict(x), y)
    predictions = {name: v.predict(x) for name, v in defended.measured.items()}
    table = with_defense(table, on_test, poison_sets, keep, defended, clean_pred, predictions, y)
    return table, summarize(table, float((clean_pred == y).mean()))


def log_run(
    run: JobRun,
    cfg: DictConfig,
    aux: Part,
    table: pd.DataFrame,
    metrics: dict[str, float],
    poisons: Poisons,
    defended: Defended,
) -> None:
    """The run's metrics, the attack's objective per step (averaged over subpopulations: a
    curve in the UI) and its files."""
    run.log_metrics(metrics)
    if len(poisons.trace):
        run.log_series(
            "attack_objective", poisons.trace.groupby("step")["objective"].mean().to_numpy()
        )
    files = {
        "subpops.csv": table,
        "poison.csv": provenance(poisons.sets, aux),
        "config.yaml": OmegaConf.to_yaml(plain(cfg)),
    }
    if len(poisons.trace):
        files["attack_trace.csv"] = poisons.trace
    if defended.details:
        files["defense_details.csv"] = defense_details(poisons.sets, defended.details)
    run.log_files(files)


def log_summary(summary: dict[str, float], defended: Defended, defense: str) -> None:
    log.info(
        "clean accuracy %.3f; target damage worst-1/5/10: %.3f / %.3f / %.3f",
        summary["clean_accuracy"],
        summary["target_damage/worst1"],
        summary["target_damage/worst5"],
        summary["target_damage/worst10"],
    )
    if defended.measured:
        log.info(
            "defended (%s, %.1f s): worst-5 target damage %.3f -> %.3f; poison found %.2f, "
            "precision %.2f, %.1f%% of rows removed",
            defense.rsplit(".", 1)[-1],
            defended.seconds,
            summary["target_damage/worst5"],
            summary["defended_target_damage/worst5"],
            summary["poison_found/mean"],
            summary["poison_precision/mean"],
            100 * summary["removed_fraction/mean"],
        )


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
