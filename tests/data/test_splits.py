import numpy as np
import pytest

from subpop_runner.data.splits import split_indices


def test_split_indices_are_disjoint_and_sized():
    train, aux, test = split_indices(1000, (0.5, 0.25, 0.25), seed=3)
    assert (len(train), len(aux), len(test)) == (500, 250, 250)
    assert not set(train) & set(aux) and not set(train) & set(test) and not set(aux) & set(test)
    assert set(np.concatenate([train, aux, test])) == set(range(1000))


def test_split_indices_same_seed_same_split_other_seed_other_split():
    first, again, other = (split_indices(100, (0.4, 0.3, 0.3), s) for s in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("sizes", [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (-0.1, 0.5, 0.5)])
def test_split_indices_rejects_impossible_fractions(sizes):
    with pytest.raises(ValueError, match="split sizes"):
        split_indices(10, sizes, seed=0)


def test_fractions_summing_to_one_use_every_row():
    parts = split_indices(48_842, (1 / 3, 1 / 3, 1 / 3), seed=0)
    assert [len(p) for p in parts] == [16_281, 16_281, 16_280]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(48_842))


def test_fractions_summing_to_less_than_one_leave_the_rest_unused():
    train, aux, test = split_indices(1000, (0.5, 0.2, 0.2), seed=0)
    assert (len(train), len(aux), len(test)) == (500, 200, 200)
    assert len(set(np.concatenate([train, aux, test]))) == 900
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 rows
    assert [len(p) for p in split_indices(100, (0.29, 0.3, 0.3), seed=0)] == [29, 30, 30]
