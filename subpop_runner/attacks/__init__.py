"""Poisoning attacks (paper Sec. 4.2): each turns one subpopulation into a `PoisonSet`."""

from subpop_runner.attacks.base import PoisonSet

__all__ = ["PoisonSet"]
