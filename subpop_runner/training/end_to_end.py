"""Regime 2, end-to-end networks: Conv and the fine-tuned transfer models (VGG-FT,
EfficientNet-FT). Each victim trains the whole network on train ∪ its own poison set.

Victims train one at a time (each its own Lightning fit, seeded ``seed + i``), with Adam, a
fixed number of epochs and shuffled mini-batches cut from tensors (a per-sample DataLoader
costs more than a small network's step). Augmentation, when the model asks for it, is the
authors': random shifts of up to 1/8 of the image (reflect-padded) and horizontal flips,
applied per batch on the batch's device.

Trained networks are kept on the CPU: 300 Conv victims take ~1.5 GB, but 300 VGG-16 victims
would take ~18 GB, so full-size VGG-FT grids attack fewer clusters per job (as the paper did).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from subpop_runner.attacks.base import PoisonSet
from subpop_runner.data.splits import Part
from subpop_runner.training.base import Fit, Victims, describe_device, span, unknown_layer

log = logging.getLogger(__name__)


class EndToEnd:
    """The regime: ``network(input_shape=…, n_classes=…)`` builds one victim's network (an
    ``nn.Module`` with ``layers`` and ``representation``); the rest is its training recipe."""

    def __init__(
        self,
        *,
        network: Callable[..., nn.Module],
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 12,
        augment: bool = False,
        predict_batch_size: int = 512,
    ) -> None:
        self.network, self.learning_rate = network, learning_rate
        self.batch_size, self.epochs, self.augment = batch_size, epochs, augment
        self.predict_batch_size = predict_batch_size

    @property
    def layers(self) -> tuple[str, ...]:
        return getattr(getattr(self.network, "func", self.network), "layers", ("input",))

    def fit(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        fit: Fit,
        description: str = "victims",
    ) -> NetworkVictims:
        n_classes = fit.splits.n_classes if fit.splits is not None else int(train.y.max()) + 1
        epochs = min(self.epochs, fit.max_epochs or self.epochs)
        networks, device, on = [], "cpu", "cpu"
        with tqdm(total=len(poison_sets), desc=description, unit="victim", leave=False) as bar:
            for i, poison in enumerate(poison_sets):
                L.seed_everything(fit.seed + i, workers=False, verbose=False)
                network = self.network(input_shape=train.x.shape[1:], n_classes=n_classes)
                victim = NetworkVictim(network, self.learning_rate, self.augment)
                data = ShuffledBatches(
                    np.concatenate([train.x, poison.x.astype(train.x.dtype)]),
                    np.concatenate([train.y, poison.y]),
                    self.batch_size,
                    seed=fit.seed + i,
                )
                trainer = fit.trainer(**fit.quiet, enable_progress_bar=False, max_epochs=epochs)
                trainer.fit(victim, DataLoader(data, batch_size=None))
                device = describe_device(trainer.strategy.root_device)
                on = trainer.strategy.root_device.type
                networks.append(victim.network.eval().cpu())
                bar.update()
        log.info("trained %d %s, %s epochs each", len(networks), description, span([epochs]))
        return NetworkVictims(networks, device, on, self.predict_batch_size)


class NetworkVictim(L.LightningModule):
    """One network under Lightning: cross-entropy, Adam on its trainable parameters."""

    def __init__(self, network: nn.Module, learning_rate: float, augment: bool) -> None:
        super().__init__()
        self.network, self.learning_rate, self.augment = network, learning_rate, augment

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.augment:
            x = shift_and_flip(x)
        loss = nn.functional.cross_entropy(self.network(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.learning_rate)


def shift_and_flip(x: Tensor, fraction: float = 0.125) -> Tensor:
    """The authors' augmentation: each image shifted by up to ``fraction`` of its size in
    each direction (reflect padding, then a random crop) and flipped left-right half the
    time."""
    n, _, height, width = x.shape
    pad_h, pad_w = int(height * fraction), int(width * fraction)
    padded = nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    top = torch.randint(0, 2 * pad_h + 1, (n,), device=x.device)
    left = torch.randint(0, 2 * pad_w + 1, (n,), device=x.device)
    rows = (top[:, None] + torch.arange(height, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, None, :]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    shifted = padded[batch, channels, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], shifted.flip(-1), shifted)


class ShuffledBatches(IterableDataset):
    """One epoch per pass: the rows shuffled with a seeded generator, cut into batches."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.y), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            yield self.x[rows], self.y[rows]


@dataclass
class NetworkVictims(Victims):
    """Victims of this regime: one trained network each."""

    networks: list[nn.Module]
    device: str
    on: str = "cpu"  # the torch device type they trained on, where they also predict
    batch_size: int = 512

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.stack([self._apply(n, x, lambda n, b: n(b).softmax(-1)) for n in self.networks])

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        layers = getattr(self.networks[0], "layers", ("input",))
        if layer not in layers:
            raise unknown_layer(layer, layers)
        return np.stack(
            [self._apply(n, x, lambda n, b: n.representation(b, layer)) for n in self.networks]
        )

    def _apply(self, network: nn.Module, x: np.ndarray, output: Callable) -> np.ndarray:
        """``output(network, batch)`` over ``x`` in batches, on the training device."""
        device = torch.device(self.on)
        network = network.to(device)
        with torch.no_grad():
            parts = [
                output(network, torch.from_numpy(x[i : i + self.batch_size]).to(device)).cpu()
                for i in range(0, len(x), self.batch_size)
            ]
        network.cpu()
        return torch.cat(parts).float().reshape(len(x), -1).numpy() if parts else np.zeros(0)
