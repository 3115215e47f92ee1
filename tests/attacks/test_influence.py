"""INF's pieces by hand on a logistic head (logits (0, w·x + b)): the flat-parameter head, the
damped objective, s_test = H⁻¹v exactly and by conjugate gradients (one CG step is the
steepest-descent step), the refit, and on scripted refits when it stops and which step's
poisons it returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subpop_runner.attacks.domain import InputDomain
from subpop_runner.attacks.influence import AuxFeatures, Head, Influence
from subpop_runner.attacks.optimization import Job
from subpop_runner.errors import ConfigError
from subpop_runner.training.differentiable import Differentiable
from subpop_runner.training.victims import FEATURES
from subpop_runner.types import Part, PoisonSet

X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [2.0, -1.0]])
Y = torch.tensor([1, 0, 0, 1])
THETA = torch.tensor([0.5, -0.3, 0.1])  # w1, w2, b


def logistic(inputs: int = 2) -> Differentiable:
    return Differentiable(torch.nn.Identity(), torch.nn.Linear(inputs, 1))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_the_head_is_a_function_of_one_flat_parameter_vector():
    model = logistic()
    head = Head(model)
    np.testing.assert_array_equal(
        head.initial, np.r_[model.head.weight.detach()[0], model.head.bias.detach()]
    )
    logits = head.logits(THETA, X)
    z = X.numpy() @ [0.5, -0.3] + 0.1
    np.testing.assert_allclose(logits.detach(), np.c_[np.zeros(4), z], rtol=1e-6)
    losses = np.log1p(np.exp(z)) - Y.numpy() * z  # −log σ(±z)
    assert float(head.loss(THETA, X, Y)) == pytest.approx(losses.mean(), rel=1e-6)
    assert float(head.loss(THETA, X, Y, total=True)) == pytest.approx(losses.sum(), rel=1e-6)
    damped = Influence(damping=0.1).objective(head, THETA, (X, Y))
    assert float(damped) == pytest.approx(losses.mean() + 0.05 * (0.25 + 0.09 + 0.01), rel=1e-6)


def hessian() -> np.ndarray:
    """The damped objective's Hessian: mean σ(1 − σ)·x̃x̃ᵀ + damping·I (damping 0.1)."""
    design = np.c_[X.numpy(), np.ones(4)]
    weight = sigmoid(design @ THETA.numpy())
    weight = weight * (1 - weight)
    return (design.T * weight) @ design / 4 + 0.1 * np.eye(3)


@pytest.mark.parametrize(
    "settings",
    [
        {"exact_max": 3, "cg_iterations": 1},  # 3 parameters: exact
        {"exact_max": 2, "cg_iterations": 50},  # conjugate gradients, converged in 3 steps
        {"exact_max": 2, "cg_iterations": 3},
    ],
)
def test_s_test_is_the_inverse_hessian_times_the_vector(settings):
    v = torch.tensor([1.0, 2.0, -1.0])
    attack = Influence(damping=0.1, **settings)
    got = attack.inverse_hessian_product(Head(logistic()), THETA, (X, Y), v)
    np.testing.assert_allclose(got, np.linalg.solve(hessian(), v.numpy()), rtol=1e-4)


def test_one_conjugate_gradient_step_is_the_steepest_descent_step():
    v = torch.tensor([1.0, 2.0, -1.0])
    attack = Influence(damping=0.1, exact_max=0, cg_iterations=1)
    got = attack.inverse_hessian_product(Head(logistic()), THETA, (X, Y), v)
    h, v = hessian(), v.numpy()
    np.testing.assert_allclose(got, (v @ v) / (v @ h @ v) * v, rtol=1e-5)


def test_the_refit_minimises_the_damped_objective_from_where_it_starts():
    attack = Influence(damping=0.1)
    head = Head(logistic())
    theta = attack.refit(head, torch.zeros(3), (X, Y))
    gradient = torch.func.grad(lambda t: attack.objective(head, t, (X, Y)))(theta)
    assert float(gradient.norm()) < 1e-4 and not theta.requires_grad


class ScriptedRefits(Influence):
    """INF whose k-th refit returns the head (w_k, 0); records the poisons it saw."""

    def __init__(self, weights: list[float], **settings) -> None:
        super().__init__(**settings)
        self.weights, self.seen = weights, []

    def refit(self, head, theta, rows):
        self.seen.append(rows[0][-1:].clone())  # the poison's features: its input
        return torch.tensor([self.weights[len(self.seen) - 1], 0.0])


def move(weights: list[float], **settings):
    """One poison (x = 0.5, label 1) against one target (x = 1, label 0), whose loss
    log(1 + eʷ) grows with the refit head's w."""
    attack = ScriptedRefits(weights, lr=0.2, **settings)
    poison = PoisonSet(0, np.array([[0.5]], np.float32), np.array([1]), np.array([0]))
    job = Job(poison, np.array([1]), torch.tensor([[1.0]]), torch.tensor([0]))
    context = AuxFeatures(torch.tensor([[0.0], [1.0]]), torch.tensor([1, 0]))
    domain = InputDomain(torch.tensor([-5.0]), torch.tensor([5.0]))
    ((x, trace),) = attack.move([job], logistic(1), domain, context)
    return attack, x, trace


def test_inf_stops_once_the_targets_loss_has_not_risen_for_patience_steps():
    # Losses rise, tie (not a rise), fall: stalled 1, then 2 = patience.
    attack, x, trace = move([0.0, 1.0, 1.0, -1.0] + [-2.0] * 7, steps=10, patience=2)
    assert trace["step"] == [0, 1, 2, 3]
    np.testing.assert_allclose(trace["objective"], np.log1p(np.exp([0.0, 1, 1, -1])), rtol=1e-6)
    np.testing.assert_array_equal(x, attack.seen[1].numpy())  # the highest loss: step 1
    assert x.dtype == np.float32 and x.shape == (1, 1)
    assert abs(float(attack.seen[1] - attack.seen[0])) == pytest.approx(0.2)  # a signed step


def test_inf_stops_after_its_steps_and_returns_the_best_steps_poisons():
    attack, x, trace = move([0.0, 1.0, 2.0, 3.0], steps=2, patience=3)
    assert trace["step"] == [0, 1, 2] and len(attack.seen) == 3
    np.testing.assert_array_equal(x, attack.seen[2].numpy())


def test_inf_reads_the_attackers_fixed_features_of_d_aux():
    class Attacker:
        def representation(self, x, layer):
            assert layer == FEATURES
            return np.stack([2 * x, 3 * x]).astype(np.float64)

    aux = Part(np.array([[1.0, 2.0]], np.float32), np.array([1]))
    context = Influence().prepare(Attacker(), aux, torch.device("cpu"))
    assert context.x.tolist() == [[2.0, 4.0]] and context.x.dtype == torch.float32
    assert context.y.tolist() == [1]


def test_inf_needs_a_head_on_fixed_features():
    class EndToEnd:
        gradients, fixed_features = True, False

    class Head_:
        gradients = fixed_features = True

    class Table:
        vocabulary = None

    Influence().check(Table(), Head_())
    with pytest.raises(ConfigError, match=r"^attack=influence: needs a head on fixed") as e:
        Influence().check(Table(), EndToEnd())
    assert str(e.value).endswith("use attack=gradient_optimization")


def test_the_settings_every_optimised_attack_shares_reach_influence():
    """alpha, the label rule, the step size and the domain's epsilon are the base's settings:
    set on influence, they are the ones it runs with."""
    attack = Influence(alpha=0.5, label_rule="max_loss", lr=0.7, epsilon=0.01, steps=3)
    assert (attack.alpha, attack.label_rule, attack.lr, attack.epsilon, attack.steps) == (
        0.5,
        "max_loss",
        0.7,
        0.01,
        3,
    )


def test_conjugate_gradients_stop_where_the_hessian_is_not_positive():
    """A Hessian made negative (damping −10 here) curves no direction up: CG stops before its
    first step and returns the zero start, not a step along a direction of negative curvature."""
    attack = Influence(damping=-10.0, exact_max=0, cg_iterations=5)
    got = attack.inverse_hessian_product(Head(logistic()), THETA, (X, Y), torch.ones(3))
    assert torch.equal(got, torch.zeros(3))
