"""What every attack returns (`PoisonSet`) and how a refusal writes memory sizes."""

from __future__ import annotations

import numpy as np
import pytest

from subpop_runner.attacks.memory import _size, check_memory
from subpop_runner.errors import ConfigError
from subpop_runner.types import PoisonSet


def test_a_poison_set_keeps_what_a_mask_keeps_with_its_provenance():
    poison = PoisonSet(4, np.arange(6.0).reshape(3, 2), np.array([0, 1, 1]), np.array([7, 8, 9]))
    kept = poison.kept(np.array([True, False, True]))
    assert kept.subpop_id == 4 and len(kept) == 2
    assert kept.x.tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert kept.y.tolist() == [0, 1] and kept.source_index.tolist() == [7, 9]


def test_rows_a_defense_relabeled_join_a_poison_set_from_no_aux_row():
    poison = PoisonSet(4, np.arange(4, dtype=np.float32).reshape(2, 2), np.array([0, 1]), [7, 8])
    joined = poison.and_rows(np.array([[9.0, 9.5]]), np.array([1]))
    assert joined.subpop_id == 4 and joined.x.dtype == np.float32
    assert joined.x.tolist() == [[0.0, 1.0], [2.0, 3.0], [9.0, 9.5]]
    assert joined.y.tolist() == [0, 1, 1] and joined.source_index.tolist() == [7, 8, -1]


def test_no_poison_is_an_empty_set_of_the_inputs_shape():
    empty = PoisonSet.empty((1, 2, 3))
    assert empty.subpop_id == -1 and len(empty) == 0
    assert empty.x.shape == (0, 1, 2, 3) and empty.x.dtype == np.float32
    assert empty.y.dtype == np.int64 and empty.source_index.dtype == np.int64
    assert empty.source_index.shape == (0,)


def test_sizes_are_written_in_the_largest_binary_unit_below_1024():
    assert _size(512) == "512.0 B"
    assert _size(1023) == "1023.0 B" and _size(1024) == "1.0 KiB"
    assert _size(1.5 * 2**20) == "1.5 MiB"
    assert _size(3 * 2**30) == "3.0 GiB"
    assert _size(5 * 2**40) == "5.0 TiB" and _size(2**52) == "4096.0 TiB"


def test_one_victims_poisons_beyond_its_memory_budget_are_refused_before_any_exists():
    check_memory([], row_bytes=10**9, memory_mb=1)  # nothing to attack
    check_memory([1024, 512], row_bytes=1024, memory_mb=1)  # exactly 1 MiB: fits
    with pytest.raises(
        ConfigError, match=r"^attack\.alpha: one subpopulation's 1,025 poison"
    ) as e:
        check_memory([1025, 512], row_bytes=1024, memory_mb=1)
    assert "need 1.0 MiB (1,024 B each)" in str(e.value)
    assert "(training.memory_mb=1 MiB)" in str(e.value)
