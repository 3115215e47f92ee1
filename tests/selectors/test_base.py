import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from subpop_runner.selectors.base import describe
from subpop_runner.selectors.cluster_match import ClusterMatch
from subpop_runner.selectors.feature_match import FeatureMatch
from subpop_runner.types import Part, Selection, Splits, Subpopulation

from ..conftest import ROOT


def test_describe_names_each_columns_most_common_value_most_shared_first():
    """20 members and 5 others: race=W holds 70% of the members, education=HS 60% (BA, its
    second value, 40%), occupation=c1 35%, sex=M 30%: the three most shared columns, one
    value each."""
    members = {
        "education": ["HS"] * 12 + ["BA"] * 8,
        "race": ["W"] * 14 + ["B"] * 6,
        "occupation": ["c1"] * 7 + ["c2"] * 5 + ["c3"] * 4 + ["c4"] * 4,
        "sex": ["M"] * 6 + ["F"] * 5 + ["X"] * 5 + ["Y"] * 4,
    }
    others = {column: ["other"] * 5 for column in members}
    annotations = pd.DataFrame({c: members[c] + others[c] for c in members})
    is_member = np.arange(25) < 20
    assert describe(annotations, is_member) == (
        "race=W (70%), education=HS (60%), occupation=c1 (35%)"
    )


def test_describe_is_empty_without_annotations_or_members():
    annotations = pd.DataFrame({"race": ["W", "B"]})
    assert describe(None, np.array([True, True])) == ""
    assert describe(annotations, np.array([False, False])) == ""


def test_restricting_the_test_rows_keeps_the_rest_of_each_subpopulation():
    """A defense's holdout leaves the test part: each subpopulation's test membership follows
    the rows kept, its aux and train membership and every status stay."""
    aux = np.array([True, False])
    subpops = [
        Subpopulation(0, "a", aux, aux, np.array([True, True, False, False])),
        Subpopulation(1, "b", ~aux, ~aux, np.array([False, False, True, True])),
    ]
    selection = Selection(subpops, {0: "attacked", 1: "not selected"})
    rows = np.array([False, True, True, False])
    restricted = selection.on_test_rows(rows)
    assert [s.test.tolist() for s in restricted.candidates] == [[True, False], [False, True]]
    assert [s.train.tolist() for s in restricted.candidates] == [[True, False], [False, True]]
    assert restricted.status == selection.status and restricted.attacked[0].id == 0


@pytest.mark.parametrize("selector", [FeatureMatch(), ClusterMatch(representation="input")])
def test_the_input_representation_is_each_parts_rows_flattened(selector):
    rng = np.random.default_rng(0)

    def images(n: int) -> Part:
        return Part(rng.random((n, 1, 2, 3), dtype=np.float32), np.zeros(n, np.int64))

    splits = Splits(images(4), images(5), images(6), ("a", "b"))
    features = selector.features(splits, surrogate=None)
    for part in ("aux", "train", "test"):
        x = getattr(splits, part).x
        np.testing.assert_array_equal(features[part], x.reshape(len(x), 6))


@pytest.mark.parametrize("selector", [FeatureMatch, ClusterMatch])
def test_a_selector_built_without_settings_has_its_configs(selector):
    """Code that builds a selector without the config (benchmarks/gpu.py) gets the setting the
    config gives: the paper's (FeatureMatch keeps 10 to 100 aux points, ClusterMatch k=100 on
    PCA to 10 dims)."""
    name = {FeatureMatch: "feature_match", ClusterMatch: "cluster_match"}[selector]
    config = OmegaConf.load(ROOT / "conf" / "selector" / f"{name}.yaml")
    built = selector()
    settings = [
        key
        for key in config
        if hasattr(built, key) and not OmegaConf.is_interpolation(config, key)
    ]
    assert len(settings) >= 5
    for key in settings:
        value = getattr(built, key)
        expected = OmegaConf.to_container(config)[key]
        assert (list(value) if isinstance(value, tuple | list) else value) == expected, key
