"""The optimisation attacks, GO and INF: on a 2-D toy with a logistic head both hurt the
subpopulation more than label flipping at the same budget; poisons stay in the input domain;
the same seed gives the same poisons; a family or dataset they cannot attack is a config
error before any run."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from subpop_runner.attacks.domain import InputDomain, distances
from subpop_runner.attacks.gradient_optimization import GradientOptimization
from subpop_runner.attacks.influence import Influence
from subpop_runner.attacks.label_flip import LabelFlip
from subpop_runner.errors import ConfigError
from subpop_runner.models.conv import Conv
from subpop_runner.models.linear_head import LinearHead
from subpop_runner.models.mlp import MLP
from subpop_runner.models.sklearn_mlp import SklearnMLP
from subpop_runner.training.base import Fit
from subpop_runner.training.end_to_end import EndToEnd
from subpop_runner.training.fixed_features import FixedFeatures
from subpop_runner.types import Part, PoisonSet, Splits, Subpopulation

# Two classes left and right of x = 0, and the subpopulation S: a small class-0 cluster up
# near the boundary.
CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [-0.5, 2.0]])
LABELS = np.array([0, 1, 0])


def blobs(n: int, seed: int) -> tuple[Part, np.ndarray]:
    rng = np.random.default_rng(seed)
    center = rng.choice(3, n, p=[0.45, 0.45, 0.1])
    x = CENTERS[center] + 0.5 * rng.standard_normal((n, 2))
    return Part(x.astype(np.float32), LABELS[center]), center == 2


def toy() -> tuple[Splits, Subpopulation]:
    (train, in_train), (aux, in_aux), (test, in_test) = (blobs(400, s) for s in range(3))
    return Splits(train, aux, test, ("left", "right")), Subpopulation(
        0, "S", in_aux, in_train, in_test
    )


def logistic_head() -> FixedFeatures:
    return FixedFeatures(
        head=partial(LinearHead, epochs=40, learning_rate=0.05, l2=0.001, batch_size=32)
    )


def fit(splits: Splits) -> Fit:
    trainer = partial(
        L.Trainer, accelerator="cpu", devices=1, max_epochs=40, enable_progress_bar=False
    )
    return Fit(trainer, seed=0, splits=splits)


def optimized(attack, splits, subpop, attacker, domain) -> PoisonSet:
    start = attack.poison(subpop, splits.aux, 2, seed=0)
    return attack.optimize([start], [subpop], attacker, splits.aux, domain).poison_sets[0]


@pytest.fixture(scope="module")
def trained_toy():
    splits, subpop = toy()
    regime = logistic_head()
    attacker = regime.fit(splits.aux, [PoisonSet.empty((2,))], fit(splits))
    return splits, subpop, regime, attacker


def test_go_and_influence_hurt_the_subpopulation_more_than_label_flipping(trained_toy):
    splits, subpop, regime, attacker = trained_toy
    domain = InputDomain.of(splits, epsilon=1 / 510)
    sets = {
        "LF": LabelFlip(alpha=1).poison(subpop, splits.aux, 2, seed=0),
        "GO": optimized(GradientOptimization(alpha=1), splits, subpop, attacker, domain),
        "INF": optimized(Influence(alpha=1), splits, subpop, attacker, domain),
    }
    assert len({len(p) for p in sets.values()}) == 1  # the same budget
    victims = regime.fit(splits.train, list(sets.values()), fit(splits))
    members = splits.test.x[subpop.test], splits.test.y[subpop.test]
    loss = dict(zip(sets, victims.loss(*members).mean(1), strict=True))
    accuracy = dict(zip(sets, (victims.predict(members[0]) == members[1]).mean(1), strict=True))
    assert loss["GO"] > loss["LF"] + 0.3 and loss["INF"] > loss["LF"] + 0.3
    assert accuracy["GO"] < accuracy["LF"] - 0.2 and accuracy["INF"] < accuracy["LF"] - 0.2


def test_the_same_seed_gives_the_same_poisons(trained_toy):
    splits, subpop, _, attacker = trained_toy
    domain = InputDomain.of(splits, epsilon=1 / 510)
    for attack in (GradientOptimization(alpha=0.5, steps=5), Influence(alpha=0.5, steps=3)):
        a, b = (optimized(attack, splits, subpop, attacker, domain) for _ in range(2))
        assert np.array_equal(a.x, b.x) and np.array_equal(a.source_index, b.source_index)


def test_go_traces_its_objective_from_the_label_flip_start(trained_toy):
    splits, subpop, _, attacker = trained_toy
    domain = InputDomain.of(splits, epsilon=1 / 510)
    start = LabelFlip(alpha=1).poison(subpop, splits.aux, 2, seed=0)
    result = GradientOptimization(alpha=1, steps=10).optimize(
        [start], [subpop], attacker, splits.aux, domain
    )
    trace = result.trace
    assert trace["step"].tolist() == list(range(11)) and (trace["subpop_id"] == 0).all()
    assert trace["objective"].iloc[-1] > trace["objective"].iloc[0]


def table_splits(seed: int = 0) -> Splits:
    """A table of two continuous columns and a 3-way one-hot category."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> Part:
        category = rng.integers(0, 3, n)
        x = np.c_[rng.normal(size=(n, 2)), np.eye(3)[category]].astype(np.float32)
        return Part(x, (x[:, 0] + category - 1 > 0).astype(np.int64))

    return Splits(part(300), part(300), part(300), ("no", "yes"), one_hot=((2, 3, 4),))


@pytest.mark.parametrize("attack", [GradientOptimization(alpha=2), Influence(alpha=2, steps=5)])
def test_table_poisons_keep_one_hot_groups_and_column_ranges(attack):
    splits = table_splits()
    regime = FixedFeatures(head=partial(MLP, learning_rate=0.02, tol=0.0))
    attacker = regime.fit(splits.aux, [PoisonSet.empty((5,))], fit(splits))
    in_category = [part.x[:, 2] == 1 for part in (splits.aux, splits.train, splits.test)]
    subpop = Subpopulation(1, "", *in_category)
    domain = InputDomain.of(splits, epsilon=1 / 510)
    poison = optimized(attack, splits, subpop, attacker, domain)
    group = poison.x[:, 2:]
    assert set(np.unique(group)) <= {0.0, 1.0} and (group.sum(1) == 1).all()
    low, high = splits.aux.x.min(0), splits.aux.x.max(0)
    assert (poison.x >= low).all() and (poison.x <= high).all()
    assert distances(poison.x, splits.aux.x[poison.source_index])[0].max() > 0.1  # it moved


def test_image_poisons_stay_valid_pixels_within_epsilon_of_their_start():
    rng = np.random.default_rng(0)

    def part(n: int) -> Part:
        level = rng.uniform(-0.45, 0.45, n).astype(np.float32)
        x = np.clip(
            level[:, None, None, None] + 0.1 * rng.standard_normal((n, 1, 6, 6)), -0.5, 0.5
        )
        return Part(x.astype(np.float32), (level > 0).astype(np.int64))

    splits = Splits(part(200), part(200), part(200), ("dark", "bright"))
    attacker = logistic_head().fit(splits.aux, [PoisonSet.empty((1, 6, 6))], fit(splits))
    bright = splits.aux.x.mean((1, 2, 3)) > 0.2
    subpop = Subpopulation(0, "", bright, np.zeros(200, bool), np.zeros(200, bool))
    epsilon = 0.02
    domain = InputDomain.of(splits, epsilon)
    for attack in (GradientOptimization(alpha=1, epsilon=epsilon), Influence(alpha=1, steps=4)):
        poison = optimized(attack, splits, subpop, attacker, domain)
        start = splits.aux.x[poison.source_index]
        assert poison.x.min() >= -0.5 and poison.x.max() <= 0.5
        moved = np.abs(poison.x - start).max()
        assert 0 < moved <= epsilon + 1e-7


def test_the_domain_projects_one_hot_groups_and_passes_gradients_straight_through():
    domain = InputDomain(torch.zeros(4), torch.ones(4), one_hot=((1, 2, 3),))
    relaxed = torch.tensor([[0.25, 0.125, 0.75, 0.5]], requires_grad=True)
    projected = domain.straight_through(relaxed)
    assert projected.tolist() == [[0.25, 0.0, 1.0, 0.0]]
    projected.sum().backward()
    assert relaxed.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    start = torch.full((1, 4), 0.5)
    ball = InputDomain(torch.zeros(4), torch.ones(4), radius=0.25)
    assert ball.clamp(torch.tensor([[0.0, 0.625, 1.0, 0.375]]), start).tolist() == [
        [0.25, 0.625, 0.75, 0.375]
    ]


def text_splits() -> Splits:
    part = Part(np.zeros((4, 3), np.int64), np.array([0, 1, 0, 1]))
    return Splits(part, part, part, ("neg", "pos"), vocabulary="abc")


@pytest.mark.parametrize(
    ("attack", "regime", "splits", "message"),
    [
        (GradientOptimization(), SklearnMLP(surrogate=None), table_splits(), "no gradients"),
        (Influence(), SklearnMLP(surrogate=None), table_splits(), "no gradients"),
        (GradientOptimization(), logistic_head(), text_splits(), "text is not supported"),
        (
            Influence(),
            EndToEnd(network=partial(Conv, width=2)),
            Splits(*[Part(np.zeros((2, 1, 8, 8), np.float32), np.zeros(2, np.int64))] * 3, ("a",)),
            "needs a head on fixed features",
        ),
    ],
)
def test_a_family_or_data_the_attack_cannot_move_is_a_config_error(
    attack, regime, splits, message
):
    with pytest.raises(ConfigError, match=message):
        attack.check(splits, regime)


def test_go_works_on_end_to_end_networks_and_gradients_reach_only_the_last_two_layers():
    splits = Splits(
        *[
            Part(
                np.random.default_rng(s).uniform(-0.5, 0.5, (40, 1, 8, 8)).astype(np.float32),
                np.random.default_rng(s).integers(0, 2, 40),
            )
            for s in range(3)
        ],
        ("a", "b"),
    )
    regime = EndToEnd(network=partial(Conv, width=2), epochs=1)
    attacker = regime.fit(splits.aux, [PoisonSet.empty((1, 8, 8))], fit(splits))
    model = attacker.differentiable(0)
    trained = {id(p) for p in model.head.parameters()}
    assert {id(p) for p in model.parameters} < trained
    assert any(p is model.head.classifier.weight for p in model.parameters)
    subpop = Subpopulation(0, "", splits.aux.y == 0, np.zeros(40, bool), np.zeros(40, bool))
    attack = GradientOptimization(alpha=0.5, steps=3, epsilon=0.01)
    poison = optimized(attack, splits, subpop, attacker, InputDomain.of(splits, 0.01))
    assert 0 < np.abs(poison.x - splits.aux.x[poison.source_index]).max() <= 0.01 + 1e-7


def test_go_batched_across_subpopulations_moves_each_as_if_alone(trained_toy):
    splits, subpop, _, attacker = trained_toy
    other = Subpopulation(1, "right", splits.aux.x[:, 0] > 2.5, subpop.train, subpop.test)
    domain = InputDomain.of(splits, epsilon=1 / 510)

    def moved(batch_rows: int) -> list[PoisonSet]:
        attack = GradientOptimization(alpha=1, steps=5, batch_rows=batch_rows)
        starts = [attack.poison(s, splits.aux, 2, seed=0) for s in (subpop, other)]
        return attack.optimize(starts, [subpop, other], attacker, splits.aux, domain).poison_sets

    alone, together = moved(1), moved(10_000)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.x, b.x, atol=1e-5)
    assert not np.allclose(alone[0].x, splits.aux.x[alone[0].source_index])
