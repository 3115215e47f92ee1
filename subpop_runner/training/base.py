"""What every training regime shares: the `Fit` settings a regime trains with and the
device/progress helpers; the `Victims` it returns are in `subpop_runner.training.victims`.

A model config names a regime (``_target_``) and the model family's parts; the regime turns
(train set, many poison sets) into `Victims`. No regime names a concrete model, and no model
imports this package: they meet through the small protocols below and in
`subpop_runner.models.network`.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch

from subpop_runner.memo import Memo, no_memo
from subpop_runner.types import Splits

log = logging.getLogger(__name__)

# Lightning's own pytree helper trips a torch deprecation warning on every fit.
warnings.filterwarnings("ignore", message=".*treespec.*", category=Warning)
for _noisy in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


@dataclass
class Fit:
    """How victims train, whatever the model: the Lightning ``Trainer`` factory (accelerator,
    devices, precision and the epoch cap from ``conf/trainer``), the seed, whether victims
    share a module (``batched``) and its memory budget, the stage cache for work done once
    per dataset (a frozen backbone's features), and the experiment's splits (a poison point
    copied from aux reuses that aux row's features)."""

    trainer: Callable[..., L.Trainer]
    seed: int
    batched: bool = True
    memory_mb: float = 512
    memo: Memo = no_memo
    splits: Splits | None = None
    quiet: dict = field(
        default_factory=lambda: {
            "logger": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
        }
    )

    @property
    def max_epochs(self) -> int | None:
        """The trainer config's epoch cap (``size=smoke`` lowers it for every family)."""
        return getattr(self.trainer, "keywords", {}).get("max_epochs")


def digest(x: np.ndarray) -> str:
    """Content digest of an array: cache keys for work done on it follow its bytes."""
    data = np.ascontiguousarray(x)
    hasher = hashlib.blake2b(f"{data.dtype}{data.shape}".encode(), digest_size=16)
    hasher.update(data.reshape(-1).view(np.uint8))  # no rows (a clean victim's poison) too
    return hasher.hexdigest()


def describe_device(device: torch.device) -> str:
    """The device victims trained on, as logged on every run (e.g. ``cuda:0 (NVIDIA H200)``)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def span(values: list[int]) -> str:
    """``12`` or ``9-12``: the epochs a group of victims trained."""
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def unknown_layer(layer: str, layers: tuple[str, ...]) -> ValueError:
    return ValueError(f"no layer {layer!r}; valid: {', '.join(layers)}")
