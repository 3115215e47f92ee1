"""Regime 2, end-to-end networks: Conv and the fine-tuned transfer models (VGG-FT,
EfficientNet-FT). Each victim trains the whole network on train ∪ its own poison set.

Victims train one at a time (each its own Lightning fit, seeded ``seed + i``), with Adam, a
fixed number of epochs and shuffled mini-batches cut from tensors (a per-sample DataLoader
costs more than a small network's step). With ``training.batched=true`` several victims share
one module (`StackedVictims`: stacked parameters under `torch.vmap`), as many as the memory
budget holds: the GPU path. On a CPU it buys little (a 1.13x throughput gain for 8
quarter-width Conv copies, measured here), so CPU presets train one at a time.

Augmentation, when the model asks for it, is the authors': random shifts of up to 1/8 of the
image (reflect-padded) and horizontal flips, applied per batch on the batch's device.

The optimizer is the model family's: Adam at a constant rate for the image networks, AdamW with
a linear decay to zero for BERT (`Recipe`). A model may also name a ``frozen`` front (BERT-LL's
frozen blocks): its output is computed once per input and cached (`FrozenFeatures`), and the
victims' networks train on it, never recomputing it. That output is memory-mapped from the
stage cache, and batches gather their rows from it and from the (small) poison sets without
ever copying train ∪ poison whole.

Trained networks are kept on the CPU: 300 Conv victims take ~1.5 GB, but 300 VGG-16 victims
would take ~18 GB, so full-size VGG-FT grids attack fewer clusters per job (as the paper did).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from subpop_runner.errors import ConfigError
from subpop_runner.training.base import Fit, describe_device, span, unknown_layer
from subpop_runner.training.differentiable import Differentiable, last_two_layers
from subpop_runner.training.frozen import FrozenFeatures
from subpop_runner.training.regime import Regime
from subpop_runner.training.victims import PENULTIMATE, PROBA, Victims, kept_rows
from subpop_runner.types import Part, PoisonSet, Splits

log = logging.getLogger(__name__)


OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "linear")


@dataclass
class Recipe:
    """How one victim's parameters are updated: ``optimizer`` "adam" (the image models) or
    "adamw" (BERT; weight decay 0, the default of transformers' own AdamW), at ``learning_rate``
    held ``constant`` or decayed ``linear``-ly to zero over ``total_steps`` (no warm-up)."""

    learning_rate: float
    optimizer: str = "adam"
    schedule: str = "constant"
    total_steps: int = 1

    def configure(self, parameters: Iterable[nn.Parameter]) -> dict:
        """What a LightningModule's ``configure_optimizers`` returns."""
        kind = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        extra = {"weight_decay": 0.0} if self.optimizer == "adamw" else {}
        optimizer = kind(parameters, lr=self.learning_rate, **extra)
        if self.schedule == "constant":
            return {"optimizer": optimizer}
        steps = max(1, self.total_steps)
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


class EndToEnd(Regime):
    """The regime: ``network(input_shape=…, n_classes=…, seed=…)`` builds one victim's
    network (an ``nn.Module`` with ``layers`` and ``representation``); ``frozen``, when
    given, is a frozen front (with ``cached_inputs``) whose output the networks read; the rest
    is the training recipe."""

    def __init__(
        self,
        *,
        network: Callable[..., nn.Module],
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 12,
        augment: bool = False,
        predict_batch_size: int = 512,
        optimizer: str = "adam",
        schedule: str = "constant",
        frozen: nn.Module | None = None,
        frozen_batch_size: int = 64,
    ) -> None:
        for key, value, valid in (
            ("optimizer", optimizer, OPTIMIZERS),
            ("schedule", schedule, SCHEDULES),
        ):
            if value not in valid:
                raise ValueError(f"{key} must be one of {', '.join(valid)}; got {value!r}")
        self.network, self.learning_rate = network, learning_rate
        self.batch_size, self.epochs, self.augment = batch_size, epochs, augment
        self.predict_batch_size = predict_batch_size
        self.optimizer, self.schedule = optimizer, schedule
        self._frozen = None
        if frozen is not None:
            self._frozen = FrozenFeatures(frozen, "cached_inputs", frozen_batch_size, mapped=True)

    @property
    def gradients(self) -> bool:
        """Whether victims offer `Victims.differentiable`: not behind a cached frozen front."""
        return self._frozen is None

    @property
    def layers(self) -> tuple[str, ...]:
        """The network's layer names (a class attribute, or read off a probe network when
        they depend on a pretrained backbone: then the class leaves them empty)."""
        network = self.network.func if isinstance(self.network, partial) else self.network
        return network.layers or self.network(input_shape=(3, 32, 32), n_classes=2, seed=0).layers

    def check(self, splits: Splits) -> None:
        """ConfigError if the network (or the frozen front) cannot read these data
        (`Network.check_inputs`)."""
        front = self._frozen.module if self._frozen is not None else None
        shape = tuple(splits.train.x.shape[1:])
        try:
            probe = front or self.network(input_shape=shape, n_classes=splits.n_classes, seed=0)
        except ValueError as error:  # a network that cannot even be built for this shape
            raise ConfigError(f"model.network cannot read these data: {error}") from None
        probe.check_inputs(splits)

    def build(self, input_shape: tuple[int, ...], n_classes: int, seed: int) -> nn.Module:
        """One victim's network, its own copy: a pretrained backbone shared by the factory is
        never trained in place."""
        return copy.deepcopy(self.network(input_shape=input_shape, n_classes=n_classes, seed=seed))

    def fit(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        fit: Fit,
        description: str = "victims",
        keep: Sequence[np.ndarray] | None = None,
    ) -> NetworkVictims:
        """One network per poison set on ``train ∪ poison``, restricted per victim by
        ``keep`` (see `kept_rows`)."""
        train_keep, poison_sets = kept_rows(len(train), poison_sets, keep)
        n_classes = fit.splits.n_classes if fit.splits is not None else int(train.y.max()) + 1
        epochs = min(self.epochs, fit.max_epochs or self.epochs)
        frozen = self._frozen
        if frozen is not None:
            train = Part(frozen(train.x, fit), train.y)
            poison_sets = [frozen.of_poison(p, fit, train.x) for p in poison_sets]
        shape = tuple(train.x.shape[1:])
        size = 1
        if fit.batched and len(poison_sets) > 1:
            size = self.victims_per_module(shape, n_classes, fit.memory_mb)
        networks, device, on = [], "cpu", "cpu"
        with tqdm(total=len(poison_sets), desc=description, unit="victim", leave=False) as bar:
            for start in range(0, len(poison_sets), size):
                part = poison_sets[start : start + size]
                seeds = [fit.seed + start + i for i in range(len(part))]
                L.seed_everything(seeds[0], workers=False, verbose=False)
                built = [self.build(shape, n_classes, seed) for seed in seeds]
                kept = None if train_keep is None else train_keep[start : start + size]
                most = max(
                    (len(train) if kept is None else int(kept[i].sum())) + len(p)
                    for i, p in enumerate(part)
                )
                recipe = Recipe(
                    self.learning_rate,
                    self.optimizer,
                    self.schedule,
                    total_steps=epochs * -(-most // self.batch_size),
                )
                if len(part) == 1:
                    module = NetworkVictim(built[0], recipe, self.augment)
                    only = None if kept is None else kept[0]
                    data = ShuffledBatches(train, part[0], self.batch_size, seeds[0], only)
                else:
                    module = StackedVictims(built, recipe, self.augment)
                    data = StackedBatches(train, part, self.batch_size, seeds[0], kept)
                trainer = fit.trainer(**fit.quiet, enable_progress_bar=False, max_epochs=epochs)
                trainer.fit(module, DataLoader(data, batch_size=None))
                device = describe_device(trainer.strategy.root_device)
                on = trainer.strategy.root_device.type
                networks += [n.eval().cpu() for n in module.trained()]
                bar.update(len(part))
        log.info(
            "trained %d %s, %d per module, %s epochs each",
            len(networks),
            description,
            size,
            span([epochs]),
        )
        inputs = None if frozen is None else partial(frozen, fit=fit)
        return NetworkVictims(networks, device, on, self.predict_batch_size, inputs)

    def victims_per_module(self, shape: tuple[int, ...], n_classes: int, memory_mb: float) -> int:
        """How many victims one stacked module holds within ``memory_mb``: per victim its
        parameters, gradients and Adam's two moments, plus a batch's activations and their
        gradients (counted on a probe network's forward pass). Networks with batch norm train
        one at a time: their running statistics cannot be updated under `torch.vmap`."""
        probe = self.network(input_shape=shape, n_classes=n_classes, seed=0)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in probe.modules()):
            log.info("the network has batch norm: victims train one at a time")
            return 1
        params = sum(p.numel() for p in probe.parameters())
        counted = []
        hooks = [
            m.register_forward_hook(lambda m, i, out: counted.append(out.numel()))
            for m in probe.modules()
            if not list(m.children())
        ]
        with torch.no_grad():
            probe(torch.zeros(1, *shape))
        for hook in hooks:
            hook.remove()
        per_victim = 4 * params + 2 * sum(counted) * self.batch_size
        return max(1, int(memory_mb * 2**20 // (4 * per_victim)))


class NetworkVictim(L.LightningModule):
    """One network under Lightning: cross-entropy, the recipe's optimizer on its trainable
    parameters."""

    def __init__(self, network: nn.Module, recipe: Recipe, augment: bool) -> None:
        super().__init__()
        self.network, self.recipe, self.augment = network, recipe, augment

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.augment:
            x = shift_and_flip(x)
        loss = nn.functional.cross_entropy(self.network(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict:
        return self.recipe.configure(p for p in self.network.parameters() if p.requires_grad)

    def trained(self) -> list[nn.Module]:
        return [self.network]


class StackedVictims(L.LightningModule):
    """Several victims' networks as one module (``training.batched=true``, the GPU path):
    their parameters stacked along a victim axis (`torch.func.stack_module_state`) and one
    forward under `torch.vmap`, each victim on its own batch ``x[v]``. The loss is the sum of
    the victims' mean losses, so each victim gets its own gradient; Adam is elementwise."""

    def __init__(self, networks: list[nn.Module], recipe: Recipe, augment: bool) -> None:
        super().__init__()
        self.recipe, self.augment = recipe, augment
        self.networks = networks  # a plain list: not submodules, their weights are copied
        params, buffers = torch.func.stack_module_state(networks)
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[k]) for k in self.names])
        self.buffer_names = list(buffers)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", buffers[name])
        self.template = [copy.deepcopy(networks[0]).to("meta")]

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[V, B, C]`` for each victim's own batch ``x [V, B, ...]``."""
        params = dict(zip(self.names, self.stacked, strict=True))
        buffers = {
            name: getattr(self, f"stacked_buffer_{i}") for i, name in enumerate(self.buffer_names)
        }
        template = self.template[0]

        def one(params: dict, buffers: dict, x: Tensor) -> Tensor:
            return torch.func.functional_call(template, (params, buffers), (x,))

        return torch.vmap(one, randomness="different")(params, buffers, x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.augment:
            x = shift_and_flip(x.flatten(0, 1)).view_as(x)
        logits = self(x)
        losses = nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        return losses.mean(1).sum()

    def configure_optimizers(self) -> dict:
        return self.recipe.configure(p for p in self.stacked.parameters() if p.requires_grad)

    def trained(self) -> list[nn.Module]:
        """Each victim's network with its trained weights copied back."""
        for v, network in enumerate(self.networks):
            state = {name: p[v] for name, p in zip(self.names, self.stacked, strict=True)}
            state |= {
                name: getattr(self, f"stacked_buffer_{i}")[v]
                for i, name in enumerate(self.buffer_names)
            }
            # Non-persistent buffers (BERT's position ids) are constants outside the state dict.
            saved = network.state_dict().keys()
            network.load_state_dict({k: t.detach().cpu() for k, t in state.items() if k in saved})
        return self.networks


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


class StackedBatches(IterableDataset):
    """Batches ``x [V, B, ...]``, ``y [V, B]`` for stacked victims: victim v's rows are
    train ∪ its own poison set, shuffled with its own order each epoch. Victims whose set is
    smaller than the largest continue into a fresh shuffle of their own rows to fill the
    epoch's steps (a few % of an epoch at most, as poison sets are small next to train).
    ``keep [V, n_train]``: each victim's train rows (all when None)."""

    def __init__(
        self,
        train: Part,
        poison_sets: Sequence[PoisonSet],
        batch_size: int,
        seed: int,
        keep: np.ndarray | None = None,
    ) -> None:
        self.rows_of = TrainAndPoison(train, poison_sets)
        starts = np.cumsum([len(train), *(len(p) for p in poison_sets)])
        every = np.arange(len(train))
        self.rows = [
            torch.from_numpy(
                np.concatenate([every if keep is None else np.flatnonzero(keep[v]), own])
            )
            for v, own in enumerate(map(np.arange, starts[:-1], starts[1:]))
        ]
        self.length = max(len(r) for r in self.rows)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        orders = []
        for rows in self.rows:
            draws = -(-self.length // len(rows))
            shuffled = [
                rows[torch.randperm(len(rows), generator=self.generator)] for _ in range(draws)
            ]
            orders.append(torch.cat(shuffled)[: self.length])
        order = torch.stack(orders)
        for start in range(0, self.length, self.batch_size):
            yield self.rows_of[order[:, start : start + self.batch_size]]


class ShuffledBatches(IterableDataset):
    """One epoch per pass over train ∪ a poison set (the train rows ``keep`` marks, all
    when None): the rows shuffled with a seeded generator, cut into batches."""

    def __init__(
        self,
        train: Part,
        poison: PoisonSet,
        batch_size: int,
        seed: int,
        keep: np.ndarray | None = None,
    ) -> None:
        self.rows_of = TrainAndPoison(train, [poison])
        self.rows = None
        if keep is not None:
            own = np.arange(len(train), len(self.rows_of))
            self.rows = torch.from_numpy(np.concatenate([np.flatnonzero(keep), own]))
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.rows is None:
            order = torch.randperm(len(self.rows_of), generator=self.generator)
        else:
            order = self.rows[torch.randperm(len(self.rows), generator=self.generator)]
        for start in range(0, len(order), self.batch_size):
            yield self.rows_of[order[start : start + self.batch_size]]


class TrainAndPoison:
    """Rows of train followed by the poison sets' rows, gathered per batch: train's rows are
    read where they lie (a memory-mapped cache stays on disk), only the poison rows are
    copied."""

    def __init__(self, train: Part, poison_sets: Sequence[PoisonSet]) -> None:
        self.train = train
        self.poison_x = np.concatenate([p.x.astype(train.x.dtype) for p in poison_sets])
        self.y = torch.from_numpy(np.concatenate([train.y, *(p.y for p in poison_sets)]))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``x``, ``y`` of rows ``index`` (any shape), stacked in that shape."""
        flat = index.reshape(-1).numpy()
        n_train = len(self.train)
        x = np.empty((len(flat), *self.train.x.shape[1:]), self.train.x.dtype)
        in_train = flat < n_train
        rows, back = np.unique(flat[in_train], return_inverse=True)  # read in file order
        x[in_train] = self.train.x[rows][back.reshape(-1)]
        x[~in_train] = self.poison_x[flat[~in_train] - n_train]
        return torch.from_numpy(x).view(*index.shape, *x.shape[1:]), self.y[index]


@dataclass
class NetworkVictims(Victims):
    """Victims of this regime: one trained network each."""

    networks: list[nn.Module]
    device: str
    on: str = "cpu"  # the torch device type they trained on, where they also predict
    batch_size: int = 512
    inputs: Callable[[np.ndarray], np.ndarray] | None = None  # a frozen front, cached

    def __len__(self) -> int:
        return len(self.networks)

    def differentiable(self, v: int) -> Differentiable:
        """Victim v's whole network as ``head`` (a copy, on the CPU); gradients over its last
        two layers (`last_two_layers`). A network behind a cached frozen front (BERT's last
        block) has no input gradients: its regime declares ``gradients = False``."""
        network = copy.deepcopy(self.networks[v]).cpu()
        return Differentiable(nn.Identity(), network, last_two_layers(network, network.classifier))

    def last_layer(self) -> list[tuple[np.ndarray, np.ndarray]]:
        layers = [n.classifier for n in self.networks]
        return [(c.weight.detach().numpy().copy(), c.bias.detach().numpy().copy()) for c in layers]

    def on_rows(
        self, shared: np.ndarray, own: Sequence[np.ndarray], what: str
    ) -> Iterator[np.ndarray]:
        """One network at a time: a grid's representations of every row would not fit."""
        shared = shared if self.inputs is None else self.inputs(shared)
        for network, rows in zip(self.networks, own, strict=True):
            if len(rows) and self.inputs is not None:  # an empty set has no front output
                rows = self.inputs(rows)
            x = np.concatenate([shared, rows.astype(shared.dtype)]) if len(rows) else shared
            yield self._apply(network, x, self._output(network, what))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = x if self.inputs is None else self.inputs(x)
        return np.stack([self._apply(n, x, self._output(n, PROBA)) for n in self.networks])

    def representation(self, x: np.ndarray, layer: str) -> np.ndarray:
        x = x if self.inputs is None else self.inputs(x)
        return np.stack([self._apply(n, x, self._output(n, layer)) for n in self.networks])

    @staticmethod
    def _output(network: nn.Module, what: str) -> Callable:
        """What `_apply` computes for ``what``: probabilities, or a layer (``penultimate``:
        the network's own name for its last layer's input)."""
        if what == PROBA:
            return lambda n, b: n(b).softmax(-1)
        layer = network.penultimate if what == PENULTIMATE else what
        if layer not in network.layers:
            raise unknown_layer(layer, network.layers)
        return lambda n, b: n.representation(b, layer)

    def _apply(self, network: nn.Module, x: np.ndarray, output: Callable) -> np.ndarray:
        """``output(network, batch)`` over ``x`` in batches, on the training device."""
        device = torch.device(self.on)
        network = network.to(device)
        with torch.no_grad():
            parts = [
                output(
                    network, torch.from_numpy(np.array(x[i : i + self.batch_size])).to(device)
                ).cpu()
                for i in range(0, len(x), self.batch_size)
            ]
        network.cpu()
        return torch.cat(parts).float().reshape(len(x), -1).numpy() if parts else np.zeros(0)
