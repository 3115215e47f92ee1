"""One trained victim as a torch function of its inputs: what gradient attacks need
(docs/architecture.md, "The victim interface").

A `Differentiable` splits a victim into a frozen front (``features``: inputs to what the
trained part reads; the identity when it reads the input) and the trained part (``head``:
logits). ``parameters`` are the trained parameters an attack's gradients are taken over: the
last two layers that training moves (a head on fixed features: all of its own, one or two
layers; an end-to-end network: its last layer and the parameterised layer before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class Differentiable:
    features: nn.Module
    head: nn.Module
    parameters: list[nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features.eval().requires_grad_(False)
        self.head.eval()
        if not self.parameters:
            self.parameters = list(self.head.parameters())

    def to(self, device: torch.device) -> Differentiable:
        self.features.to(device)
        self.head.to(device)
        return self

    def logits(self, x: Tensor) -> Tensor:
        """Logits ``[n, C]`` (C ≥ 2) of inputs ``x``; differentiable in ``x`` and the head."""
        return two_class(self.head(self.features(x)))


def two_class(logits: Tensor) -> Tensor:
    """Softmax logits: a single logistic output z becomes ``[0, z]`` (the same
    cross-entropy), more outputs stay as they are."""
    if logits.shape[-1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], -1)
    return logits


class PooledFeatures(nn.Module):
    """A frozen backbone's pooled features as a module (a head's ``features``)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.pooled_features(x)


def last_two_layers(network: nn.Module, classifier: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters and those of the last layer with parameters registered
    before it (the network's order of definition)."""
    owners = [m for m in network.modules() if next(m.parameters(recurse=False), None) is not None]
    index = next(i for i, m in enumerate(owners) if m is classifier)
    return [p for m in owners[max(0, index - 1) : index + 1] for p in m.parameters(recurse=False)]
