import numpy as np
import pandas as pd
import pytest

from subpop_runner.errors import ConfigError
from subpop_runner.selectors.feature_match import FeatureMatch
from subpop_runner.types import Part, Splits


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


def test_the_paper_bounds_keep_groups_of_exactly_10_and_100_aux_points():
    aux = part({"A/F": 9, "A/M": 10, "B/F": 100, "B/M": 101})
    splits = Splits(aux, aux, aux, ("0", "1"))
    found = FeatureMatch(columns=["race", "sex"]).candidates(splits)
    assert sorted(s.sizes["aux"] for s in found) == [10, 100]


def test_matching_on_one_column_groups_by_its_values():
    aux = part({"Asian/F": 12, "Asian/M": 3, "White/M": 20})
    test = part({"Asian/M": 2, "White/F": 5})
    found = FeatureMatch(columns=["race"], min_size=1).candidates(
        Splits(aux, aux, test, ("0", "1"))
    )
    assert [(s.description, s.sizes["aux"], s.sizes["test"]) for s in found] == [
        ("race=Asian", 15, 2),
        ("race=White", 20, 5),
    ]


def test_only_the_lowest_ranked_group_is_attacked_when_asked(splits):
    aux = splits.aux
    low = ((aux.annotations["race"] == "B") & (aux.annotations["sex"] == "F")).to_numpy()
    proba = np.full((len(aux), 2), 0.5)
    proba[low, aux.y[low]], proba[low, 1 - aux.y[low]] = 0.1, 0.9  # B/F: 0.1 on its labels
    selection = FeatureMatch(
        columns=["race", "sex"], min_size=1, max_size=1000, take=["lowest"], n=1
    ).select(splits, clean_proba_aux=proba, features={})
    (attacked,) = selection.attacked
    assert attacked.description == "race=B, sex=F"
    assert selection.count("not selected") == 2


def test_a_dataset_without_annotations_has_no_columns_to_match(splits):
    images = Part(np.zeros((4, 2), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match=r"choose selector.columns from \[\]"):
        FeatureMatch().check(Splits(images, images, images, ("0", "1")))
