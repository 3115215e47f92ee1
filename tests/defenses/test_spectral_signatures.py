"""Spectral signatures by hand: scores on a line of points (centred and not), the edge cases
that score nothing, and per class the 1.5·ε highest-scoring rows removed."""

from __future__ import annotations

import numpy as np

from subpop_runner.defenses.spectral_signatures import SpectralSignatures, spectral_scores
from tests.victims import Penultimate

LINE = np.array([[3.0, 0.0], [1.0, 0.0], [5.0, 0.0], [-1.0, 0.0]])  # mean (2, 0)


def test_spectral_scores_are_distances_along_the_top_direction_centred_or_not():
    assert spectral_scores(LINE).tolist() == [1.0, 1.0, 3.0, 3.0]
    assert spectral_scores(LINE, centered=False).tolist() == [3.0, 1.0, 5.0, 1.0]
    assert spectral_scores(LINE[:2]).tolist() == [1.0, 1.0]  # two rows are enough


def test_spectral_scores_of_one_row_or_of_identical_rows_are_zero():
    assert spectral_scores(np.array([[3.0, 4.0]]), centered=False).tolist() == [0.0]
    assert spectral_scores(np.ones((3, 2))).tolist() == [0.0, 0.0, 0.0]
    assert spectral_scores(np.zeros((3, 2)), centered=False).tolist() == [0.0, 0.0, 0.0]


def test_spectral_signatures_remove_the_top_share_of_each_class():
    """Class 0: 20 rows along a line, scored by distance from their mean; 1.5·ε·20 = 3 go
    (rows 17-19). Class 1: 7 rows, 1.5·ε·7 = 1.05: one goes (row 25, far from the rest)."""
    offsets = np.arange(20.0) ** 1.5  # farthest from their mean: 19, 18, 17, then 0
    class_0 = np.c_[100 + offsets - offsets.mean(), np.full(20, 100.0)]
    class_1 = np.c_[np.full(7, -4.0), [0.0, 1, -1, 2, -2, 30, 3]]
    labels = np.r_[np.zeros(20, int), np.ones(7, int)]
    rows = Penultimate([labels], [np.r_[class_0, class_1]])
    defended = SpectralSignatures(epsilon=0.1)(rows, victims="undefended")
    assert np.flatnonzero(~defended.keep[0]).tolist() == [17, 18, 19, 25]
    expected = np.r_[np.abs(offsets - offsets.mean()), np.abs(class_1[:, 1] - 33 / 7)]
    np.testing.assert_allclose(defended.score[0], expected)
    assert defended.rounds == [1] and defended.victims == "retrained"
    assert len(rows.trained) == 1 and rows.trained[0][1] is None
    np.testing.assert_array_equal(rows.trained[0][0][0], defended.keep[0])
    uncentred = SpectralSignatures(centered=False)(rows, victims=None)
    np.testing.assert_allclose(uncentred.score[0][20:], spectral_scores(class_1, False))
