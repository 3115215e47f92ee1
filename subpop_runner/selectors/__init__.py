"""Subpopulation selectors (paper Sec. 4.1): FeatureMatch and ClusterMatch."""

from subpop_runner.selectors.base import Selector
from subpop_runner.types import Selection, Subpopulation

__all__ = ["Selection", "Selector", "Subpopulation"]
