import numpy as np
import pytest

from subpop_runner.data.images import halves_split, scale_pixels


def test_pixels_map_to_minus_half_through_half():
    pixels = np.array([0, 51, 255], dtype=np.uint8)
    assert scale_pixels(pixels).tolist() == pytest.approx([-0.5, -0.3, 0.5])
    assert scale_pixels(pixels).dtype == np.float32


def test_train_set_halved_test_set_whole():
    train, aux, test = halves_split(11, 4, seed=0, max_rows=None)
    assert (len(train), len(aux)) == (5, 6)
    assert sorted([*train, *aux]) == list(range(11))
    assert test.tolist() == [0, 1, 2, 3]


def test_max_rows_caps_every_part_with_a_seeded_sample():
    parts = halves_split(100, 50, seed=1, max_rows=31)
    assert [len(p) for p in parts] == [10, 10, 10]
    assert not set(parts[0]) & set(parts[1])
    again, other = halves_split(100, 50, 1, 31), halves_split(100, 50, 2, 31)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[2], other[2])


def test_max_rows_above_a_part_keeps_it_whole():
    assert [len(p) for p in halves_split(10, 4, seed=0, max_rows=300)] == [5, 5, 4]
