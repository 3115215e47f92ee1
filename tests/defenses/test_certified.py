"""The certified defense's arithmetic worked by hand: the noise's likelihood-ratio regions for
two changed labels among three classes, the Neyman-Pearson check and the threshold it gives,
the Hoeffding + union bound of one row, the ridge's ‖β(x)‖², and which predictions a victim's
poison count leaves certified."""

from __future__ import annotations

import numpy as np
import pytest

from subpop_runner.defenses.certified import (
    Certified,
    CertifiedRidge,
    RidgeHead,
    SmoothedRidge,
    certified_threshold,
    certifies,
    flip_regions,
    with_constant,
)
from subpop_runner.errors import ConfigError
from subpop_runner.training.victims import FEATURES
from tests.victims import declared


def test_two_changed_labels_among_three_classes_make_five_regions():
    """q = 0.3, K = 3: a changed label's noisy copy is its original (μ 0.7, ν 0.15), the
    changed one (μ 0.15, ν 0.7) or the third class (0.15 either way); j counts changed minus
    original over the two labels."""
    order, mu, nu = flip_regions(2, 0.3, 3)
    assert order.tolist() == [-2, -1, 0, 1, 2]
    np.testing.assert_allclose(mu, [0.49, 0.21, 0.2325, 0.045, 0.0225], rtol=1e-12)
    np.testing.assert_allclose(nu, [0.0225, 0.045, 0.2325, 0.21, 0.49], rtol=1e-12)


def test_with_four_classes_a_noisy_label_is_one_of_two_others_as_often_as_it_is_either():
    order, mu, nu = flip_regions(1, 0.3, 4)  # q/3 each other class; 2q/3 the other two
    assert order.tolist() == [-1, 0, 1]
    np.testing.assert_allclose(mu, [0.7, 0.2, 0.1], rtol=1e-12)
    np.testing.assert_allclose(nu, [0.1, 0.2, 0.7], rtol=1e-12)


def test_one_changed_label_among_two_classes_leaves_the_middle_region_empty():
    order, mu, nu = flip_regions(1, 0.1, 2)
    assert order.tolist() == [-1, 0, 1]
    np.testing.assert_allclose(mu, [0.9, 0.0, 0.1], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(nu, [0.1, 0.0, 0.9], rtol=1e-12, atol=1e-300)


def test_the_worst_case_fills_the_lowest_ratio_regions_first():
    """Two changed labels, q = 0.3, K = 3: the attacker's set of μ-mass p keeps ν-mass
    0.3 + 0.21·(p − 0.9325)/0.045 once past the first three regions, above 1/2 from
    p = 0.9325 + 3/70 on."""
    threshold = 0.9325 + 3 / 70
    assert certified_threshold(2, 0.3, 3) == pytest.approx(threshold, abs=1e-9)
    assert certifies(threshold + 1e-6, 2, 0.3, 3) and not certifies(threshold - 1e-6, 2, 0.3, 3)
    assert not certifies(0.9, 2, 0.3, 3)  # 0.0675 + 0.2325·(0.2/0.2325): ν-mass 0.2675
    assert certifies(1.0, 2, 0.3, 3)
    # No label changed: the top class needs only a majority.
    assert certifies(0.5 + 1e-9, 0, 0.3, 3) and not certifies(0.5, 0, 0.3, 3)


def test_the_bound_on_one_rows_top_class_is_hoeffding_and_a_union_over_the_others():
    """Scores (2, 0, 1) at x̃ = (1, 1) with M = I: ‖β‖² = 2; under q = 0.3 the expected gaps
    shrink by 1 − qK/(K − 1) = 0.55 to 1.1 and 0.55; p ≥ 1 − exp(−1.1²/4) − exp(−0.55²/4)."""
    weights = np.array([[2.0, -1.0, 0.0], [0.0, 1.0, 1.0]])  # [d + 1, K]
    head = RidgeHead(weights, np.eye(2), q=0.3, threshold=0.5)
    top, bound = head.top_class_bound(np.array([[1.0]]))
    assert top.tolist() == [0]
    expected = 1 - np.exp(-(1.1**2) / 4) - np.exp(-(0.55**2) / 4)
    assert bound[0] == pytest.approx(expected, rel=1e-12)
    two = RidgeHead(np.array([[1.0, -1.0], [0.0, 0.0]]), 4 * np.eye(2), q=0.25, threshold=0.5)
    top, bound = two.top_class_bound(np.array([[1.0], [-3.0]]))
    assert top.tolist() == [0, 1]  # gaps 2 and 6, ×(1 − 0.5) = 1 and 3; ‖β‖² = 8 and 40
    np.testing.assert_allclose(bound, [1 - np.exp(-1 / 16), 1 - np.exp(-9 / 80)], rtol=1e-12)


def test_the_ridges_spread_matrix_gives_the_squared_norm_of_beta():
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(12, 2)), np.arange(12) % 3
    head = RidgeHead.fit(features, labels, 3, l2=0.5, q=0.2, flips=2)
    test = rng.normal(size=(4, 2))
    design = with_constant(features)
    beta = design @ np.linalg.inv(design.T @ design + 0.5 * np.eye(3)) @ with_constant(test).T
    np.testing.assert_allclose(head.scores(test), beta.T @ np.eye(3)[labels], rtol=1e-10)
    spread = ((with_constant(test) @ head.m) * with_constant(test)).sum(1)
    np.testing.assert_allclose(spread, (beta**2).sum(0), rtol=1e-10)
    assert head.q == 0.2 and head.threshold == certified_threshold(2, 0.2, 3)
    assert with_constant(np.array([[1, 2]])).dtype == np.float64


class Fixed:
    """Victims whose fixed features are the input."""

    device = "cpu"

    def representation(self, x, layer):
        assert layer == FEATURES
        return np.stack([np.asarray(x, float)] * 2)


class Rows:
    def __init__(self, features, labels, budget) -> None:
        self.features, self.labels, self.removal_budget = features, labels, budget
        self.n_classes = 2

    def __len__(self) -> int:
        return len(self.labels)

    def outputs(self, victims, what):
        assert what == FEATURES
        return iter(self.features)


def test_each_victims_predictions_are_certified_against_its_own_poison_count():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    y = (x[:, 0] > 0).astype(int)
    rows = Rows([x, x[:30]], [y, y[:30]], budget=[0, 1])
    defended = Certified(flip_probability=0.2, l2=2.0)(rows, Fixed())
    probe = rng.normal(size=(25, 2))
    certified = defended.stages["certified"].predict(probe)
    for v, (n, flips) in enumerate([(40, 0), (30, 1)]):
        head = RidgeHead.fit(x[:n], y[:n], 2, 2.0, 0.2, flips)
        top, bound = head.top_class_bound(probe)
        np.testing.assert_array_equal(certified[v], np.where(bound >= head.threshold, top, -1))
        scores = head.scores(probe)
        softmax = np.exp(scores - scores.max(1, keepdims=True))
        np.testing.assert_allclose(
            defended.victims.predict_proba(probe)[v], softmax / softmax.sum(1, keepdims=True)
        )
    assert (certified[0] >= 0).sum() > (certified[1] >= 0).sum() > 0  # a flip costs some
    assert isinstance(defended.victims, SmoothedRidge)
    assert isinstance(defended.stages["certified"], CertifiedRidge)
    assert [k.tolist() for k in defended.keep] == [[True] * 40, [True] * 30]
    assert [s.tolist() for s in defended.score] == [[0.0] * 40, [0.0] * 30]
    assert defended.rounds == [0, 0]


def test_certified_refuses_a_model_that_does_not_declare_fixed_features():
    Certified().check(10, declared(fixed_features=True))
    with pytest.raises(ConfigError, match=r"^defense=certified: ") as error:
        Certified().check(10, declared())
    assert str(error.value).endswith("use a model on fixed features (model=mlp, *_ll, bert_head)")


def test_the_smoothed_probabilities_are_a_softmax_safe_from_large_scores():
    """Scores (1000, 1001) and (−1000, −1001): each row's softmax, without overflow."""
    head = RidgeHead(np.array([[1000.0, 1001.0], [0.0, 0.0]]), np.eye(2), q=0.1, threshold=0.5)
    proba = SmoothedRidge(Fixed(), [head, head]).predict_proba(np.array([[1.0], [-1.0]]))
    low = 1 / (1 + np.e)
    np.testing.assert_allclose(proba[0], [[low, 1 - low], [1 - low, low]], rtol=1e-12)
