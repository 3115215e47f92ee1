"""subpop_runner: experiment runner for subpopulation data-poisoning attacks."""

__version__ = "0.1.0"
