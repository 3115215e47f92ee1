"""Poisoning attacks (paper Sec. 4.2): each turns one subpopulation into a `PoisonSet`."""

from subpop_runner.types import PoisonSet

__all__ = ["PoisonSet"]
