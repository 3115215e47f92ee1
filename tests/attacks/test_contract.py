"""The attacker's threat model, tested by behaviour: the poisons come from D_aux and models
trained on it, never from the victim's training rows or the test rows.

Every option in conf/attack (with both flip-label rules) goes through the pipeline's poison
step twice, with the same aux set and subpopulation but the training and test parts swapped
for other rows: the poisons must be the same.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import subpop_runner.schema  # noqa: F401  (registers the config schemas)
from subpop_runner import pipeline
from subpop_runner.attacks.domain import InputDomain
from subpop_runner.errors import ConfigError
from subpop_runner.types import Part, Splits, Subpopulation
from tests.attacks.test_optimization import blobs
from tests.victims import AttackerVictims, declared

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "attack").glob("*.yaml"))
# Fewer steps than the presets': the question is what the attack reads, not how far it goes.
STEPS = {"gradient_optimization": 5, "influence": 3}


def an_attack(option: str, rule: str):
    overrides = [f"attack={option}", f"attack.label_rule={rule}"]
    if option in STEPS:
        overrides.append(f"attack.steps={STEPS[option]}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return instantiate(compose("config", overrides=overrides).attack)


def world(seed: int, inverted: bool = False) -> tuple[Splits, Subpopulation]:
    """The toy's aux set (seed 1) and subpopulation S, with training and test parts drawn
    with ``seed`` (and their labels inverted: any model trained on them is the opposite of
    one trained on aux)."""
    (train, in_train), (aux, in_aux), (test, in_test) = (
        blobs(n, s) for n, s in ((400 + seed, 10 + seed), (400, 1), (300, 20 + seed))
    )
    if inverted:
        train, test = (Part(p.x, 1 - p.y) for p in (train, test))
    return Splits(train, aux, test, ("left", "right")), Subpopulation(
        0, "S", in_aux, in_train, in_test
    )


def poisons(attack, splits: Splits, subpop: Subpopulation):
    """The pipeline's poison step, its attacker's model a content-only victim (closed form:
    trained on other rows, it is another model)."""

    def train(part: Part, poison_sets, description: str = "") -> AttackerVictims:
        return AttackerVictims.fit([(np.r_[part.x, p.x], np.r_[part.y, p.y]) for p in poison_sets])

    training = OmegaConf.create({"memory_mb": 512})
    return pipeline.poison(attack, [subpop], splits, train, 0, training).sets[0]


def test_every_attack_option_is_checked_here():
    assert {"label_flip", "gradient_optimization", "influence"} <= set(OPTIONS)


@pytest.mark.parametrize("rule", ["least_frequent", "max_loss"])
@pytest.mark.parametrize("option", OPTIONS)
def test_the_poisons_do_not_depend_on_the_training_or_test_rows(option, rule):
    splits, subpop = world(0)
    attack = an_attack(option, rule)
    first = poisons(attack, splits, subpop)
    other = poisons(an_attack(option, rule), *world(7, inverted=True))
    assert len(first) == int(attack.alpha * subpop.aux.sum()) > 0
    domain = InputDomain.of(splits, attack.epsilon)  # the aux set's box, per column
    assert (first.x >= domain.low.numpy()).all() and (first.x <= domain.high.numpy()).all()
    again = poisons(an_attack(option, rule), splits, subpop)  # same seed, same poisons
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.source_index, other.source_index)
    np.testing.assert_array_equal(first.y, other.y)
    np.testing.assert_array_equal(first.x, other.x)


@pytest.mark.parametrize("option", OPTIONS)
def test_an_attacks_defaults_are_its_config(option):
    """Code that builds an attack without the config gets the settings the config gives."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        configured = instantiate(compose("config", overrides=[f"attack={option}"]).attack)
    assert vars(type(configured)()) == vars(configured)


@pytest.mark.parametrize("option", OPTIONS)
def test_an_attack_takes_a_capable_family_and_refuses_others_with_a_config_error(option):
    """Before any run: a table and a family with every ability pass; token ids or a family
    without gradients or fixed features either pass or give one ConfigError naming the
    attack, never another exception."""
    attack = an_attack(option, "least_frequent")
    tables, _ = world(0)
    capable = declared("Capable", gradients=True, fixed_features=True, warm_start=True)
    attack.check(tables, capable)
    text = replace(tables, vocabulary="a tokenizer's digest")
    for splits, regime in [(text, capable), (tables, declared("Bare")), (text, declared())]:
        try:
            attack.check(splits, regime)
        except ConfigError as error:
            assert f"attack={option}" in str(error)
