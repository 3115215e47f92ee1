"""The paper's two negative results about defenses, as commands (Sec. 7 and 8):

- `figure2` (``subpop figure2``): three subpopulations of 20 points, 30 label-flip poisons
  on the second, logistic regression; the unpoisoned, poisoned, poisoned + TRIM and poisoned
  + SEVER models drawn side by side. The poisons bias the second subpopulation towards their
  label, so its real points get the high losses (and large gradients) and the defense removes
  *them*: TRIM makes the damage worse.
- `theorem71` (``subpop theorem71``): a noisy k-subpopulation mixture and a locally dependent
  learner (k-nearest neighbours). The theorem's attack adds ``|D_K|`` points (``≤ n/k``;
  ``< 2·α·n`` with probability ``≥ 1 − exp(−α·n/2)`` for the smallest weight α) with the
  flipped label to the smallest subpopulation K; the command prints those sizes beside the
  smallest attack that flips the learner's prediction on K, found by trying each size.

Both use the same TRIM and SEVER code as every experiment (`TrainingRows`), with a
scikit-learn logistic regression as the victim family.
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from subpop_runner.arguments import ArgumentParser, integer, number_in, output_file
from subpop_runner.defenses.base import Defense, RowOrder
from subpop_runner.defenses.sever import Sever
from subpop_runner.defenses.trim import Trim
from subpop_runner.training.victims import Victims

CENTERS = np.array([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
LABELS = np.array([0, 1, 1])
TARGET = 1  # the second subpopulation is attacked


class LogisticVictims(Victims):
    """Fitted scikit-learn logistic regressions (the penultimate layer is the input)."""

    device = "cpu"

    def __init__(self, models: list[LogisticRegression]) -> None:
        self.models = models

    def __len__(self) -> int:
        return len(self.models)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.stack([m.predict_proba(x) for m in self.models])

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        return np.broadcast_to(x, (len(self), *x.shape))

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(m.coef_, m.intercept_) for m in self.models]


def subpopulations(per_subpop: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x``, ``y`` and subpopulation index of three Gaussian subpopulations on a line, labelled
    0, 1, 1."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, 0.6, (per_subpop, 2)) for c in CENTERS])
    group = np.repeat(np.arange(len(CENTERS)), per_subpop)
    return x, LABELS[group], group


@dataclass
class Figure2:
    """One draw of the Figure 2 setting, and each model's accuracy on the target's test
    points."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    poison_x: np.ndarray
    poison_y: np.ndarray
    models: dict[str, LogisticRegression]
    kept: dict[str, np.ndarray]  # per defense: the mask over train rows then poison rows
    target_accuracy: dict[str, float]

    def damage(self, name: str) -> float:
        return self.target_accuracy["unpoisoned"] - self.target_accuracy[name]

    def real_removed(self, name: str) -> int:
        """Real points of the target subpopulation the defense removed."""
        return int((~self.kept[name][: len(self.y)] & (self.group == TARGET)).sum())

    def poison_removed(self, name: str) -> int:
        return int((~self.kept[name][len(self.y) :]).sum())


def figure2(seed: int = 0, per_subpop: int = 20, n_poison: int = 30) -> Figure2:
    x, y, group = subpopulations(per_subpop, seed)
    test_x, _, test_group = subpopulations(200, seed + 1000)
    rng = np.random.default_rng([seed, 1])
    poison_x = CENTERS[TARGET] + rng.normal(0, 0.6, (n_poison, 2))
    poison_y = np.full(n_poison, 1 - LABELS[TARGET])
    every_x, every_y = np.concatenate([x, poison_x]), np.concatenate([y, poison_y])

    def train(keep: list[np.ndarray]) -> LogisticVictims:
        return LogisticVictims([LogisticRegression().fit(every_x[k], every_y[k]) for k in keep])

    models = {
        "unpoisoned": LogisticRegression().fit(x, y),
        "poisoned": LogisticRegression().fit(every_x, every_y),
    }
    kept = {}
    defenses: dict[str, Defense] = {"TRIM": Trim(), "SEVER": Sever()}
    for name, defense in defenses.items():
        order = RowOrder((x, y), [(poison_x, poison_y)], seed)
        rows = order.view(2, removal_budget=[len(poison_y)], train=train)
        defended = defense(rows, LogisticVictims([models["poisoned"]]))
        models[f"poisoned + {name}"] = defended.victims.models[0]
        kept[f"poisoned + {name}"] = order.in_training_order(defended.keep)[0]
    on_target = test_x[test_group == TARGET]
    accuracy = {
        name: float((m.predict(on_target) == LABELS[TARGET]).mean()) for name, m in models.items()
    }
    return Figure2(x, y, group, poison_x, poison_y, models, kept, accuracy)


def draw_figure2(result: Figure2, path: Path) -> None:
    """The four models' decision boundaries over the data, defenses' removals circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result.models), figsize=(4 * len(result.models), 3.6))
    grid_x, grid_y = np.meshgrid(np.linspace(-5.5, 5.5, 200), np.linspace(-3, 3, 120))
    grid = np.c_[grid_x.ravel(), grid_y.ravel()]
    for ax, (name, model) in zip(axes, result.models.items(), strict=True):
        shade = model.predict_proba(grid)[:, 1].reshape(grid_x.shape)
        ax.contourf(grid_x, grid_y, shade, levels=[0, 0.5, 1], colors=["#f6d7d2", "#d5e4f2"])
        ax.contour(grid_x, grid_y, shade, levels=[0.5], colors="k", linewidths=1)
        colors = np.where(result.y == 1, "tab:blue", "tab:red")
        ax.scatter(*result.x.T, c=colors, s=14, label="real points")
        if name != "unpoisoned":
            ax.scatter(*result.poison_x.T, c="tab:red", marker="x", s=18, label="poisons")
        if name in result.kept:
            every = np.concatenate([result.x, result.poison_x])
            gone = every[~result.kept[name]]
            ax.scatter(*gone.T, facecolors="none", edgecolors="k", s=60, label="removed")
        ax.set_title(f"{name}\ntarget damage {result.damage(name):+.2f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Theorem71:
    n: int
    k: int
    smallest: int  # |D_K|: the theorem's attack size
    smallest_weight: float  # α
    observed: int  # the smallest attack that flips the prediction on K
    flipped_at_theorem_size: float  # share of K's test points flipped by |D_K| poisons
    collateral_at_theorem_size: float  # share of other subpopulations' predictions changed

    @property
    def bound(self) -> float:
        return self.n / self.k

    @property
    def weight_bound(self) -> float:
        return 2 * self.smallest_weight * self.n

    @property
    def weight_bound_probability(self) -> float:
        return 1 - math.exp(-self.smallest_weight * self.n / 2)


def theorem71(
    n: int = 2000, k: int = 10, noise: float = 0.1, neighbours: int = 15, seed: int = 0
) -> Theorem71:
    """A noisy k-subpopulation mixture: disjoint Gaussian clusters on a circle, weights from a
    Dirichlet, each subpopulation's label Bernoulli(p) with p = noise or 1 − noise; a kNN
    learner; poisons drawn from the smallest subpopulation's distribution, flipped label."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(k) / k
    centers = 10 * k * np.c_[np.cos(angles), np.sin(angles)]
    weights = rng.dirichlet(np.full(k, 5.0))
    majority = rng.integers(0, 2, k)

    def draw(count: int, subpop: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        group = rng.choice(k, count, p=weights) if subpop is None else subpop
        x = centers[group] + rng.normal(0, 1, (count, 2))
        y = np.where(rng.random(count) < noise, 1 - majority[group], majority[group])
        return x, y, group

    x, y, group = draw(n)
    smallest = int(np.argmin(np.bincount(group, minlength=k)))
    size = int((group == smallest).sum())
    test_x, _, test_group = draw(2000)
    on_target = test_group == smallest
    clean = KNeighborsClassifier(neighbours).fit(x, y).predict(test_x)
    flipped_label = 1 - np.bincount(clean[on_target], minlength=2).argmax()

    # Attacks of every size share their first points, so a larger attack adds to a smaller.
    poison_x, _, _ = draw(4 * size, np.full(4 * size, smallest))

    def attacked(count: int) -> np.ndarray:
        model = KNeighborsClassifier(neighbours).fit(
            np.concatenate([x, poison_x[:count]]), np.r_[y, np.full(count, flipped_label)]
        )
        return model.predict(test_x)

    def flips(count: int) -> bool:
        return (attacked(count)[on_target] != clean[on_target]).mean() > 0.5

    observed = next((c for c in range(1, 4 * size + 1) if flips(c)), -1)
    at_theorem = attacked(size)
    return Theorem71(
        n=n,
        k=k,
        smallest=size,
        smallest_weight=float(weights.min()),
        observed=observed,
        flipped_at_theorem_size=float((at_theorem[on_target] != clean[on_target]).mean()),
        collateral_at_theorem_size=float((at_theorem[~on_target] != clean[~on_target]).mean()),
    )


# Formats matplotlib writes by itself, chosen by the suffix; without one it would write
# <name>.png beside the name asked for.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def figure_file(text: str) -> Path:
    """``figure2 --out``: a .png, .pdf or .svg file in a folder that exists."""
    if Path(text).suffix.lower() not in FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text} is not a .png, .pdf or .svg file; name one, e.g. figure2.png"
        )
    return output_file(text)


def main_figure2(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="subpop figure2", description="Paper Figure 2: TRIM and SEVER remove real points."
    )
    parser.add_argument(
        "--out",
        type=figure_file,
        default="figure2.png",
        help="the figure: a .png, .pdf or .svg file in a folder that exists",
    )
    parser.add_argument("--seed", type=integer(0), default=0, help="an integer >= 0")
    args = parser.parse_args(argv)
    result = figure2(args.seed)
    draw_figure2(result, args.out)
    for name in result.models:
        removed = (
            f"; removed {result.real_removed(name)} real target points and "
            f"{result.poison_removed(name)} of {len(result.poison_y)} poisons"
            if name in result.kept
            else ""
        )
        print(f"{name:>18}: target damage {result.damage(name):+.3f}{removed}")
    print(f"figure: {args.out}")


def main_theorem71(argv: list[str]) -> None:
    parser = ArgumentParser(
        prog="subpop theorem71",
        description="Theorem 7.1: label flips of the smallest subpopulation flip a kNN.",
    )
    parser.add_argument("--n", type=integer(1), default=2000, help="training points")
    parser.add_argument("--k", type=integer(2), default=10, help="subpopulations, 2 to n")
    parser.add_argument(
        "--noise",
        type=number_in(0, 0.5),
        default=0.1,
        help="the chance that a label is not its subpopulation's majority, in [0, 0.5)",
    )
    parser.add_argument("--neighbours", type=integer(1), default=15, help="the kNN's k, 1 to n")
    parser.add_argument("--seed", type=integer(0), default=0, help="an integer >= 0")
    args = parser.parse_args(argv)
    if args.k > args.n:
        parser.error(f"argument --k: got {args.k} for --n {args.n}; valid: an integer from 2 to n")
    if args.neighbours > args.n:
        parser.error(
            f"argument --neighbours: got {args.neighbours} for --n {args.n}; valid: an integer "
            "from 1 to n"
        )
    # Numpy warns about the mean of nothing when K is empty; that is refused below instead.
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        r = theorem71(args.n, args.k, args.noise, args.neighbours, args.seed)
    if r.smallest == 0 or math.isnan(r.flipped_at_theorem_size):
        empty = "training" if r.smallest == 0 else "test"
        parser.error(
            f"argument --k: with --n {args.n} and --seed {args.seed}, the smallest of the "
            f"{args.k} subpopulations drew no {empty} point, so there is no attack to measure; "
            "lower --k or raise --n"
        )
    print(
        f"n = {r.n}, k = {r.k}, smallest subpopulation K: |D_K| = {r.smallest}, "
        f"weight α = {r.smallest_weight:.3f}"
    )
    print(
        f"theorem's attack size |D_K| = {r.smallest} <= n/k = {r.bound:.0f}; 2αn = "
        f"{r.weight_bound:.0f} (holds with probability >= {r.weight_bound_probability:.3f})"
    )
    print(f"observed: {r.observed} flipped-label points flip the kNN's prediction on K")
    print(
        f"with |D_K| poisons: {100 * r.flipped_at_theorem_size:.0f}% of K's test points "
        f"flipped, {100 * r.collateral_at_theorem_size:.1f}% of the others' changed"
    )
