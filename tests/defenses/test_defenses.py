"""Each defense on hand-made data: planted outliers it must remove, a clean victim it must
(nearly) leave alone, and the promise that no defense can see which rows are poison."""

from __future__ import annotations

import ast
import importlib.util
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import silhouette_score

from subpop_runner.defenses import base
from subpop_runner.defenses.activation_clustering import ActivationClustering, relative_sizes
from subpop_runner.defenses.base import DefenseError, RowOrder, TrainingRows
from subpop_runner.defenses.certified import (
    Certified,
    RidgeHead,
    certified_threshold,
    flip_regions,
)
from subpop_runner.defenses.fine_pruning import FinePruning, fine_tune, prune
from subpop_runner.defenses.sever import Sever, gradient_outlier_scores
from subpop_runner.defenses.spectral_signatures import SpectralSignatures, spectral_scores
from subpop_runner.defenses.trim import Trim
from subpop_runner.errors import ConfigError
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.models.mlp import MLP
from subpop_runner.training.base import Fit
from subpop_runner.training.end_to_end import EndToEnd
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.training.victims import FEATURES, PENULTIMATE, proba_from_logits
from subpop_runner.types import Part, PoisonSet, Splits
from tests.conftest import ROOT
from tests.victims import ContentVictims, LinearVictims

trainer = partial(L.Trainer, accelerator="cpu", devices=1, max_epochs=30)
PLANTED = 15


def blobs(n: int, seed: int) -> Part:
    """Class 0 around (0, 0), class 1 around (4, 4)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = 4.0 * y[:, None] + rng.normal(0, 0.7, (n, 2))
    return Part(x.astype(np.float32), y.astype(np.int64))


def planted_sets() -> tuple[Splits, list[PoisonSet]]:
    """200 shared rows; victim 0 also trains on 15 planted rows (class-1 points labelled 0,
    the label-flip poison), victim 1 on nothing else."""
    train, aux = blobs(200, 0), blobs(200, 1)
    splits = Splits(train, aux, blobs(200, 2), class_names=("a", "b"))
    rng = np.random.default_rng(3)
    planted = rng.choice(np.flatnonzero(aux.y == 1), PLANTED, replace=False)
    sets = [
        PoisonSet(0, aux.x[planted], np.zeros(PLANTED, np.int64), planted),
        PoisonSet.empty((2,)),
    ]
    return splits, sets


@pytest.fixture(scope="module")
def defended_setup():
    """The planted case on `LinearVictims`."""
    splits, sets = planted_sets()
    train = splits.train
    rows_of = [(np.r_[train.x, p.x], np.r_[train.y, p.y]) for p in sets]

    def train_victims(keep: list[np.ndarray] | None = None) -> LinearVictims:
        keep = keep or [np.ones(len(y), bool) for _, y in rows_of]
        return LinearVictims.fit([(x[k], y[k]) for (x, y), k in zip(rows_of, keep, strict=True)])

    order = RowOrder((train.x, train.y), [(p.x, p.y) for p in sets], seed=0)
    rows = order.view(2, removal_budget=[len(p) for p in sets], train=train_victims)
    return rows, train_victims(), order


@pytest.fixture(scope="module")
def trained_setup():
    """The planted case on victims a regime trains (a linear head under Lightning)."""
    splits, sets = planted_sets()
    regime = FixedFeatures(head=partial(LinearHead, epochs=30, learning_rate=0.05, l2=0.0))
    train_victims = partial(regime.fit, splits.train, sets, Fit(trainer, seed=0, splits=splits))
    order = RowOrder((splits.train.x, splits.train.y), [(p.x, p.y) for p in sets], seed=0)
    rows = order.view(2, removal_budget=[len(p) for p in sets], train=train_victims)
    return rows, train_victims(), order


def removed(order: RowOrder, defended) -> tuple[np.ndarray, np.ndarray]:
    """Victim 0's planted rows removed (bool per planted row), and victim 1's removed share."""
    keep = order.in_training_order(defended.keep)
    return ~keep[0][200:], 1 - keep[1].mean()


def test_trim_removes_the_planted_rows_and_keeps_a_clean_victim_whole(defended_setup):
    rows, victims, order = defended_setup
    defended = Trim()(rows, victims)  # m: each victim's true poison count (15 and 0)
    planted_removed, clean_removed = removed(order, defended)
    assert planted_removed.all()
    assert clean_removed == 0 and defended.rounds[1] == 0
    assert (~defended.keep[0]).sum() == PLANTED  # exactly m rows go


def test_trim_with_a_fraction_removes_that_share():
    order = RowOrder(
        (np.zeros((90, 1)), np.zeros(90, int)), [(np.zeros((10, 1)), np.ones(10, int))], 0
    )
    rows = order.view(2, removal_budget=[10], train=None)
    assert Trim(fraction=0.2).removals(rows) == [20]
    assert Trim(m=7).removals(rows) == [7]
    assert Trim().removals(rows) == [10] and Trim().oracle_m


def test_sever_removes_the_planted_rows_within_its_budget(defended_setup):
    rows, victims, order = defended_setup
    defended = Sever()(rows, victims)
    planted_removed, clean_removed = removed(order, defended)
    assert planted_removed.mean() >= 0.9
    assert clean_removed <= 0.15  # 3% of the kept rows, 5 rounds


def test_spectral_signatures_remove_the_planted_rows(defended_setup):
    rows, victims, order = defended_setup
    defended = SpectralSignatures()(rows, victims)
    planted_removed, clean_removed = removed(order, defended)
    assert planted_removed.all()
    assert clean_removed == pytest.approx(0.15, abs=0.01)  # 1.5·ε of each class, by design


def test_activation_clustering_removes_a_small_separated_cluster_only(defended_setup):
    rows, victims, order = defended_setup
    defended = ActivationClustering()(rows, victims)
    planted_removed, clean_removed = removed(order, defended)
    assert planted_removed.all()
    assert clean_removed == 0  # one blob per class: no class is flagged
    assert defended.details[1][0]["removed"] == 0 and defended.details[0][0]["removed"] >= 15


@pytest.mark.parametrize("defense", [Trim, Sever])
def test_warm_started_rounds_remove_the_planted_rows_and_end_in_a_fit_from_scratch(
    trained_setup, defense
):
    rows, victims, order = trained_setup
    defended = defense(warm_start=True, rounds=3)(rows, victims)
    planted_removed, _ = removed(order, defended)
    assert planted_removed.mean() >= 0.9
    # The defended victims are the learner run afresh on the kept rows (same seed).
    x = blobs(50, 9).x
    scratch = rows.train(defended.keep)
    np.testing.assert_array_equal(defended.victims.predict_proba(x), scratch.predict_proba(x))


def test_a_warm_start_begins_at_the_victims_it_replaces():
    """One epoch from the trained victims stays near them; one epoch from scratch does not."""
    train, sets = blobs(200, 0), [PoisonSet.empty((2,))] * 2
    regime = FixedFeatures(head=partial(MLP, learning_rate=0.01))
    trained = regime.fit(train, sets, Fit(trainer, seed=0))
    one_epoch = Fit(partial(trainer, max_epochs=1), seed=0)
    warm = regime.fit(train, sets, one_epoch, start=trained)
    cold = regime.fit(train, sets, one_epoch)

    def moved(victims) -> float:
        return float((victims.chunks[0].weights - trained.chunks[0].weights).detach().norm())

    assert moved(warm) < 0.1 * moved(cold)
    assert not warm.chunks[0].stopped.any()  # its stopping rule starts afresh


def test_a_warm_start_needs_a_regime_that_offers_one():
    regime = EndToEnd(network=object)
    with pytest.raises(ConfigError, match="defense.warm_start"):
        Trim(warm_start=True).check(100, regime)
    Trim().check(100, regime)


def test_activation_clustering_clusters_activations_no_wider_than_its_components_as_they_are():
    """As ART: 3 units are not "reduced" to 10 (FastICA would only whiten them)."""
    rng = np.random.default_rng(0)
    a = np.r_[rng.normal(0, 1, (90, 3)), rng.normal(0, 1, (10, 3)) + [0, 0, 6]]
    cluster, silhouette = ActivationClustering().cluster(a, seed=0)
    assert np.flatnonzero(cluster == cluster[-1]).tolist() == list(range(90, 100))
    assert silhouette == pytest.approx(silhouette_score(a, cluster))


def test_activation_clustering_sizes_are_arts_analyze_by_size():
    assert relative_sizes(np.array([0, 1, 1, 1, 1]), 2)[0] == pytest.approx(0.2)


def test_spectral_scores_point_at_the_outlying_direction():
    rng = np.random.default_rng(0)
    r = np.r_[rng.normal(0, 1, (95, 5)), rng.normal(0, 1, (5, 5)) + [8, 0, 0, 0, 0]]
    scores = spectral_scores(r)
    assert set(np.argsort(scores)[-5:]) == set(range(95, 100))


def test_sever_scores_equal_an_explicit_svd_of_the_centred_gradients():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], 40)
    hidden, labels = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    grads = np.einsum("nc,nd->ncd", proba - np.eye(3)[labels], np.c_[hidden, np.ones(40)])
    grads = grads.reshape(40, -1)
    for c in range(3):
        grads[labels == c] -= grads[labels == c].mean(0)
    top = np.linalg.svd(grads)[2][0]
    expected = (grads @ top) ** 2
    got = gradient_outlier_scores(proba, hidden, labels, 3, iterations=500)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_defense_that_empties_a_class_fails_the_run_clearly(defended_setup):
    rows, victims, order = defended_setup
    with pytest.raises(DefenseError, match="every training row of class"):
        Trim(m=199)(rows, victims)  # victim 1 keeps 1 of its 200 rows: one class


def test_rows_come_in_an_order_that_hides_the_poison(defended_setup):
    rows, _, order = defended_setup
    order = order.in_training_order([np.arange(len(labels)) for labels in rows.labels])
    poison_positions = order[0][200:]  # where victim 0's planted rows sit in its order
    assert poison_positions.max() - poison_positions.min() > 100  # spread, not a tail


FORBIDDEN_IMPORTS = ("subpop_runner.attacks", "subpop_runner.selectors", "subpop_runner.pipeline")
PROVENANCE_WORDS = ("source_index", "subpop_id", "PoisonSet")


def defense_sources(conf: Path = ROOT / "conf") -> dict[str, Path]:
    """Every module under subpop_runner/defenses/ and every module a ``conf/defense`` file's
    ``_target_`` names (a user's own defense included), by name, with its source file."""
    package = Path(base.__file__).parent
    found = {f"subpop_runner.defenses.{path.stem}": path for path in package.glob("*.py")}
    for config in sorted((conf / "defense").glob("*.yaml")):
        module = OmegaConf.load(config)["_target_"].rsplit(".", 1)[0]
        found[module] = Path(importlib.util.find_spec(module).origin)
    return found


def provenance_reads(source: Path) -> list[str]:
    """What in a defense's source could tell poison from clean rows: an import of code that
    knows provenance (attacks, selectors, the pipeline) or a poison set's fields."""
    text = source.read_text()
    tree = ast.parse(text)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    return sorted(name for name in imported if name and name.startswith(FORBIDDEN_IMPORTS)) + [
        word for word in PROVENANCE_WORDS if word in text
    ]


@pytest.mark.parametrize("module", sorted(defense_sources()))
def test_no_defense_can_read_the_poison(module):
    assert provenance_reads(defense_sources()[module]) == []


def test_the_provenance_guard_covers_a_defense_any_config_points_to(tmp_path, monkeypatch):
    """A throw-away conf/defense file naming a module outside the package enters the guard,
    which finds what that module reads."""
    (tmp_path / "defense").mkdir()
    (tmp_path / "defense" / "peek.yaml").write_text("_target_: peeking_defense.Peek\n")
    (tmp_path / "peeking_defense.py").write_text(
        "from subpop_runner.attacks.label_flip import LabelFlip\n"
        "def peek(poison):\n    return poison.source_index\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = defense_sources(tmp_path)
    assert "subpop_runner.defenses.trim" in found and "peeking_defense" in found
    assert provenance_reads(found["peeking_defense"]) == [
        "subpop_runner.attacks.label_flip",
        "source_index",
    ]


def test_the_rows_a_defense_gets_offer_outputs_losses_and_training_only():
    public = {name for name in vars(TrainingRows) if not name.startswith("_")}
    assert public == {"outputs", "losses", "train"}


def test_fine_pruning_prunes_the_dormant_unit_and_stops_before_accuracy_drops():
    """Unit 0 never fires on clean data (a backdoor's unit, say); unit 1 carries the task and
    unit 2 a little. Pruning goes lowest mean activation first and stops at the unit whose loss
    would cost more than 4 points."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    signal = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.3, 200)
    hidden = np.c_[np.zeros(200), 2 + signal, 0.5 + 0.1 * rng.normal(size=200)]
    weights = np.array([[5.0, -1.0, 0.0], [-5.0, 1.0, 0.0]])
    bias = np.array([2.0, -2.0])
    mask, (before, after) = prune(hidden, labels, weights, bias, max_drop=0.04)
    assert mask.tolist() == [0.0, 1.0, 0.0]  # unit 2 (mean 0.5) goes too; unit 1 would cost
    assert after >= before - 0.04


def test_fine_tuning_fits_the_last_layer_to_the_holdout():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    hidden = np.c_[np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.2, 100), np.ones(100)]
    wrong = np.array([[-3.0, 0.0]]), np.array([0.0])  # one logistic output, backwards
    weights, bias = fine_tune(hidden, labels, *wrong, epochs=300, learning_rate=0.05)
    assert ((hidden @ weights.T + bias)[:, 0] > 0).astype(int).tolist() == labels.tolist()


def test_fine_pruning_needs_a_layer_to_prune():
    FinePruning().check(100, FixedFeatures(head=partial(MLP)))
    FinePruning().check(100, FixedFeatures(head=partial(LinearHead), backbone=object()))
    with pytest.raises(ConfigError, match="no hidden units to prune"):
        FinePruning().check(100, FixedFeatures(head=partial(LinearHead)))


def test_the_holdout_is_a_seeded_slice_of_the_test_part():
    rows = FinePruning(holdout_fraction=0.05).holdout(1000, seed=3)
    assert len(rows) == 50 and len(set(rows)) == 50
    assert rows.tolist() == FinePruning(holdout_fraction=0.05).holdout(1000, seed=3).tolist()
    assert rows.tolist() != FinePruning(holdout_fraction=0.05).holdout(1000, seed=4).tolist()


def test_one_flip_needs_a_top_class_probability_of_17_18_at_q_one_tenth():
    """Two classes, q = 0.1, one changed label: the worst set keeps ν = 0.1 + 0.9·(p − 0.9)/0.1,
    above 1/2 from p = 0.9444 on (worked by hand)."""
    assert certified_threshold(1, 0.1, 2) == pytest.approx(17 / 18, abs=1e-6)
    assert certified_threshold(0, 0.1, 2) == 0.5
    for k in (2, 3, 10):
        for r in (1, 4, 9):
            _, mu, nu = flip_regions(r, 0.3, k)
            assert mu.sum() == pytest.approx(1) and nu.sum() == pytest.approx(1)
    # More flips need more confidence; a larger q buys robustness.
    assert certified_threshold(5, 0.3, 2) > certified_threshold(2, 0.3, 2)
    assert certified_threshold(5, 0.4, 2) < certified_threshold(5, 0.3, 2)


def test_the_ridge_is_linear_in_the_labels_and_its_bound_holds_under_label_noise():
    """Scores are β(x)ᵀY; the Hoeffding + union bound is below the top class's frequency under
    the noise, estimated by refitting on 400 noisy label draws."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    labels = (features[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int) + (features[:, 1] > 1)
    head = RidgeHead.fit(features, labels, 3, l2=1.0, q=0.2, flips=0)
    test = rng.normal(size=(5, 3))
    design = np.c_[features, np.ones(60)]
    beta = design @ np.linalg.inv(design.T @ design + np.eye(4)) @ np.c_[test, np.ones(5)].T
    np.testing.assert_allclose(head.scores(test), beta.T @ np.eye(3)[labels], atol=1e-10)
    top, bound = head.top_class_bound(test)
    hits = np.zeros(5)
    for _ in range(400):
        noisy = np.where(rng.random(60) < 0.2, (labels + rng.integers(1, 3, 60)) % 3, labels)
        hits += RidgeHead.fit(features, noisy, 3, 1.0, 0.2, 0).scores(test).argmax(1) == top
    assert (bound <= hits / 400 + 0.05).all()


def test_certified_needs_fixed_features():
    Certified().check(100, FixedFeatures(head=partial(MLP)))
    with pytest.raises(ConfigError, match="ridge head reads fixed features"):
        Certified().check(100, EndToEnd(network=object))


def test_a_tiny_cluster_survives_the_silhouette_sample():
    """3 outlying rows among 5,000: a plain 2,000-row sample can miss them (one label left, and
    scikit-learn's silhouette raises); the stratified sample keeps both clusters."""
    rng = np.random.default_rng(0)
    activations = np.r_[rng.normal(0, 1, (4997, 4)), rng.normal(30, 1, (3, 4))]
    cluster, silhouette = ActivationClustering(silhouette_sample=50).cluster(activations, seed=0)
    assert sorted(np.bincount(cluster)) == [3, 4997] and silhouette > 0.5


def test_a_warm_start_is_accepted_where_the_regime_offers_one():
    for defense in (Trim(warm_start=True), Sever(warm_start=True)):
        defense.check(100, FixedFeatures(head=partial(MLP)))


class HeadOnInput(ContentVictims):
    """A ReLU layer and a last layer on the input, as the Adult MLP: the input is its fixed
    features (and layer ``input``), the ReLU layer (``hidden``) its penultimate; no other
    layer."""

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        if layer in (FEATURES, "input"):
            return np.repeat(np.asarray(x, np.float64)[None], len(self), axis=0)
        if layer in (PENULTIMATE, "hidden"):
            return super().representation(x, layer)
        raise ValueError(f"no layer {layer!r}")


@pytest.mark.parametrize("defense", [FinePruning, Certified], ids=["fine_pruning", "certified"])
def test_victims_a_defense_builds_offer_what_every_victim_offers(defense):
    """Fine-pruning's and the certified defense's victims (a new last layer over the old
    victims' representation): their penultimate representation through their last layer
    gives their probabilities, as for every victim, and their other layers are the old ones'."""
    splits, sets = planted_sets()
    train = splits.train
    rows_of = [(np.r_[train.x, p.x], np.r_[train.y, p.y]) for p in sets]
    victims = HeadOnInput.fit(rows_of)
    order = RowOrder((train.x, train.y), [(p.x, p.y) for p in sets], seed=0)
    holdout = (splits.test.x[:40], splits.test.y[:40])
    rows = order.view(2, [len(p) for p in sets], train=None, holdout=holdout)
    defended = defense(**({"epochs": 20} if defense is FinePruning else {}))(rows, victims)
    x = splits.test.x[40:80]
    for built in (defended.victims, *defended.stages.values()):
        hidden = built.representation(x, PENULTIMATE)
        logits = [h @ w.T + b for h, (w, b) in zip(hidden, built.last_layer(), strict=True)]
        np.testing.assert_allclose(
            np.stack([proba_from_logits(z) for z in logits]), built.predict_proba(x), atol=1e-9
        )
        assert len(built) == 2
        for layer in ("input", "hidden"):  # the ReLU layer by its name: the old victims'
            np.testing.assert_array_equal(
                built.representation(x, layer), victims.representation(x, layer)
            )
