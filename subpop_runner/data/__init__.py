"""Datasets: each loader returns `Splits` (train = the victim's D, aux = D_aux, test = D_test)."""

from subpop_runner.data.splits import Part, Splits, split_indices

__all__ = ["Part", "Splits", "split_indices"]
