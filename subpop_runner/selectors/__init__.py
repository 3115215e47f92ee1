"""Subpopulation selectors (paper Sec. 4.1): FeatureMatch and ClusterMatch."""

from subpop_runner.selectors.base import Selection, Selector, Subpopulation

__all__ = ["Selection", "Selector", "Subpopulation"]
