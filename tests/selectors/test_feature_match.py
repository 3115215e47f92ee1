import numpy as np
import pandas as pd
import pytest

from subpop_runner.data.splits import Part, Splits
from subpop_runner.errors import ConfigError
from subpop_runner.selectors.feature_match import FeatureMatch


def part(groups: dict[str, int]) -> Part:
    labels = [g for g, n in groups.items() for _ in range(n)]
    annotations = pd.DataFrame(
        {"race": [g.split("/")[0] for g in labels], "sex": [g.split("/")[1] for g in labels]}
    )
    n = len(labels)
    return Part(np.zeros((n, 2), np.float32), np.arange(n) % 2, annotations)


@pytest.fixture
def splits() -> Splits:
    aux = part({"A/F": 5, "A/M": 12, "B/F": 40, "B/M": 150})
    other = part({"A/F": 3, "A/M": 7, "B/F": 20, "B/M": 60})
    return Splits(other, aux, part({"A/M": 4, "B/F": 9, "B/M": 30}), ("0", "1"))


def test_keeps_only_groups_inside_aux_size_bounds(splits):
    found = FeatureMatch(columns=["race", "sex"], min_size=10, max_size=100).candidates(splits)
    assert sorted(s.description for s in found) == ["race=A, sex=M", "race=B, sex=F"]
    assert sorted(s.sizes["aux"] for s in found) == [12, 40]


def test_membership_is_exact_on_every_split(splits):
    found = FeatureMatch(columns=["race", "sex"], min_size=1, max_size=1000).candidates(splits)
    group = next(s for s in found if s.description == "race=B, sex=F")
    assert group.sizes == {"aux": 40, "train": 20, "test": 9}
    assert (splits.test.annotations.loc[group.test, "sex"] == "F").all()


def test_group_without_test_points_is_reported_not_attacked(splits):
    selection = FeatureMatch(columns=["race", "sex"], min_size=1, max_size=1000).select(
        splits, clean_proba_aux=np.full((len(splits.aux), 2), 0.5), features={}
    )
    assert selection.count("no test points") == 1  # A/F has no test points
    assert len(selection.attacked) == 3


def test_unknown_annotation_column_names_the_choices(splits):
    with pytest.raises(ConfigError, match=r"choose selector.columns from \['race', 'sex'\]"):
        FeatureMatch(columns=["education"]).check(splits)
