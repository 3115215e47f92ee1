"""The certified label-flip defense of Rosenfeld et al. (ICML 2020): randomized smoothing over
the training labels, for models on fixed features (paper Sec. 8, Tables 13-14 of the CCS
version).

The base learner is a ridge head on the fixed features every victim shares (the tabular
columns, or a frozen backbone's output): scores ``s(x) = x̃ᵀ A⁻¹ Fᵀ Y`` with
``A = FᵀF + λI`` (``x̃``: the features and a constant 1), linear in the one-hot labels ``Y``,
so ``s_c(x) = Σ_i β_i(x)·[y_i = c]`` with ``β(x) = F A⁻¹ x̃``. The smoothing noise replaces
each training label, independently with probability ``q``, by one of the other classes drawn
uniformly. Because the scores are linear in the labels, no sampling is needed:

- the smoothed prediction is the ridge's own (``E[s_c]`` is increasing and affine in ``s_c``
  for ``q < (K−1)/K``);
- a lower bound on the probability ``p`` of the top class ``a``: for each other class ``b``,
  ``D = s_a − s_b`` is a sum of independent terms of range ``2|β_i|`` with mean
  ``(1 − qK/(K−1))·(s_a − s_b)``, so Hoeffding gives ``P(D ≤ 0) ≤ exp(−E[D]² / (2‖β‖²))``;
  a union bound over ``b`` gives ``p ≥ 1 − Σ_b``. (The authors optimise a Chernoff bound
  per point; Hoeffding's is looser, so these radii are lower bounds of theirs.)
- the certified radius: the most label flips ``r`` for which the Neyman-Pearson worst case
  of ``r`` changed labels keeps the top class's probability above 1/2 (`certifies`).

A test point counts as *certified* against victim v when its radius is at least v's poison
count; the run logs the smoothed model's damage (the defended damage) and the certified damage,
where every point that is misclassified or not certified counts as lost.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp

from subpop_runner.defenses.base import Defended, Defense, TrainingRows
from subpop_runner.errors import ConfigError
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import FEATURES, PENULTIMATE, Victims


class Certified(Defense):
    def __init__(self, *, flip_probability: float = 0.4, l2: float = 1.0):
        self.q, self.l2 = flip_probability, l2

    def check(self, n_train: int, regime: Regime) -> None:
        if not regime.fixed_features:
            raise ConfigError(
                "defense=certified: its ridge head reads fixed features, and this model trains "
                "end to end; use a model on fixed features (model=mlp, *_ll, bert_head)"
            )

    def defend(self, rows: TrainingRows, victims: Victims) -> Defended:
        heads = []
        outputs = rows.outputs(victims, FEATURES)
        for labels, features, flips in zip(rows.labels, outputs, rows.removal_budget, strict=True):
            heads.append(RidgeHead.fit(features, labels, rows.n_classes, self.l2, self.q, flips))
        keep = [np.ones(len(labels), bool) for labels in rows.labels]
        smoothed = SmoothedRidge(victims, heads)
        return Defended(
            keep,
            [np.zeros(len(labels)) for labels in rows.labels],
            [0] * len(rows),
            smoothed,
            stages={"certified": CertifiedRidge(victims, heads)},
        )


class RidgeHead:
    """One victim's ridge head and what its certificate needs: weights ``W [d+1, K]``, the
    matrix ``M = A⁻¹ FᵀF A⁻¹`` (``‖β(x)‖² = x̃ᵀ M x̃``), and the smallest lower bound on the
    top class's probability that certifies ``flips`` label flips."""

    def __init__(self, weights: np.ndarray, m: np.ndarray, q: float, threshold: float):
        self.weights, self.m, self.q, self.threshold = weights, m, q, threshold

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        l2: float,
        q: float,
        flips: int,
    ) -> RidgeHead:
        f = with_constant(features)
        gram = f.T @ f
        inverse = np.linalg.inv(gram + l2 * np.eye(len(gram)))
        weights = inverse @ (f.T @ np.eye(n_classes)[labels])
        return cls(weights, inverse @ gram @ inverse, q, certified_threshold(flips, q, n_classes))

    def scores(self, features: np.ndarray) -> np.ndarray:
        return with_constant(features) @ self.weights

    def top_class_bound(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted class and the Hoeffding + union lower bound on its probability under
        the label noise, per row."""
        f = with_constant(features)
        scores = f @ self.weights
        n_classes = scores.shape[1]
        top = scores.argmax(1)
        gap = (scores[np.arange(len(f)), top][:, None] - scores) * (
            1 - self.q * n_classes / (n_classes - 1)
        )
        spread = ((f @ self.m) * f).sum(1).clip(min=1e-300)  # ‖β(x)‖², one product
        tails = np.exp(-(gap**2) / (2 * spread[:, None]))
        tails[np.arange(len(f)), top] = 0.0
        return top, 1 - tails.sum(1)


def with_constant(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return np.concatenate([features, np.ones((len(features), 1))], 1)


def flip_regions(r: int, q: float, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``r`` changed labels: the likelihood-ratio regions of the noise around the original
    labels (μ) and the changed ones (ν), as log ratio ``j·log ρ`` with ``j`` = #(noisy label =
    the changed one) − #(= the original), and each region's μ- and ν-mass."""
    stay, each_other = np.log1p(-q), np.log(q / (n_classes - 1))
    rest = np.log(q * (n_classes - 2) / (n_classes - 1)) if n_classes > 2 else -np.inf
    ks = np.arange(r + 1)
    originals, changed = np.meshgrid(ks, ks, indexing="ij")
    valid = originals + changed <= r
    others = r - originals - changed
    log_count = (
        gammaln(r + 1) - gammaln(originals + 1) - gammaln(changed + 1) - gammaln(others + 1)
    )
    with np.errstate(invalid="ignore"):
        rest_term = np.where(others > 0, others * rest, 0.0)
    mu = log_count + originals * stay + changed * each_other + rest_term
    nu = log_count + originals * each_other + changed * stay + rest_term
    j = (changed - originals)[valid]
    mu, nu = mu[valid], nu[valid]
    order = np.unique(j)
    mu_j = np.array([logsumexp(mu[j == k]) for k in order])
    nu_j = np.array([logsumexp(nu[j == k]) for k in order])
    return order, np.exp(mu_j), np.exp(nu_j)


def certifies(p: float, r: int, q: float, n_classes: int) -> bool:
    """Whether a top-class probability ≥ ``p`` under the noise stays above 1/2 whatever ``r``
    labels an attacker changes (Neyman-Pearson: the attacker's best set fills the regions of
    lowest ν/μ first)."""
    if r == 0:
        return p > 0.5
    _, mu, nu = flip_regions(r, q, n_classes)  # regions in increasing ratio ν/μ
    filled, kept = 0.0, 0.0
    for m, n in zip(mu, nu, strict=True):
        if filled + m >= p:
            kept += n * (p - filled) / m
            break
        filled, kept = filled + m, kept + n
    return kept > 0.5


def certified_threshold(flips: int, q: float, n_classes: int) -> float:
    """The smallest top-class probability (lower bound) that certifies ``flips`` flips;
    above 1 when none does."""
    if flips == 0:
        return 0.5
    if not certifies(1.0, flips, q, n_classes):
        return 1.5
    low, high = 0.5, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if certifies(middle, flips, q, n_classes) else (middle, high)
    return high


class SmoothedRidge(Victims):
    """The smoothed ridge heads: their prediction is the ridge's; ``predict_proba`` is the
    softmax of the ridge scores (scores, not calibrated probabilities)."""

    def __init__(self, victims: Victims, heads: list[RidgeHead]) -> None:
        self.victims, self.heads, self.device = victims, heads, victims.device

    def __len__(self) -> int:
        return len(self.heads)

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        return self.victims.representation(x, FEATURES if layer == PENULTIMATE else layer)

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(h.weights[:-1].T, h.weights[-1]) for h in self.heads]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        features = self.victims.representation(x, FEATURES)
        scores = np.stack([h.scores(f) for h, f in zip(self.heads, features, strict=True)])
        shifted = np.exp(scores - scores.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)


class CertifiedRidge(SmoothedRidge):
    """The smoothed heads' predictions where they are certified against the victim's poison
    count, and -1 (lost) where they are not."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        features = self.victims.representation(x, FEATURES)
        out = []
        for head, f in zip(self.heads, features, strict=True):
            top, bound = head.top_class_bound(f)
            out.append(np.where(bound >= head.threshold, top, -1))
        return np.stack(out)
