"""Small demo models with seeded weights, for examples, tests and benchmarks.

Nothing is downloaded: each factory builds its model from a fixed seed without touching
the caller's random state, and each model has ``example_inputs(batch)`` returning the
positional inputs of one forward call (also seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import torch
from torch import nn

__all__ = ["MLP", "SmallCNN", "TransformerBlock", "mlp", "small_cnn", "transformer_block"]


M = TypeVar("M", bound=nn.Module)


def _seeded_inputs(seed: int, *shape: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


class MLP(nn.Module):
    """``depth`` Linear layers of ``width`` features with ReLU between them."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(width, width))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Module.__call__ is typed as returning Any; these layers return a tensor.
        return cast(torch.Tensor, self.layers(x))

    def example_inputs(self, batch: int = 32) -> tuple[torch.Tensor]:
        return (_seeded_inputs(1, batch, self.width),)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head over ``channels``×32×32 images."""

    def __init__(self, channels: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(32 * 4 * 4, classes)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(torch.flatten(self.features(x), 1)))

    def example_inputs(self, batch: int = 8) -> tuple[torch.Tensor]:
        return (_seeded_inputs(2, batch, self.channels, 32, 32),)


class TransformerBlock(nn.Module):
    """One ``nn.TransformerEncoderLayer`` (batch first, no dropout) over token features."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(
                f"d_model={d_model} is not divisible by nhead={nhead} — pick nhead dividing it"
            )
        self.layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True
        )
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.layer(x))

    def example_inputs(self, batch: int = 4, tokens: int = 16) -> tuple[torch.Tensor]:
        return (_seeded_inputs(3, batch, tokens, self.d_model),)


def _seeded(seed: int, build: Callable[[], M]) -> M:
    # fork_rng keeps the caller's global RNG untouched while default initialisers run seeded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()


def mlp(width: int = 256, depth: int = 3) -> MLP:
    """A seeded ``depth``-layer MLP of ``width`` features, in eval mode."""
    if width < 1 or depth < 1:
        raise ValueError(f"mlp needs width >= 1 and depth >= 1, got width={width} depth={depth}")
    return _seeded(11, lambda: MLP(width, depth))


def small_cnn(channels: int = 3, classes: int = 10) -> SmallCNN:
    """A seeded small CNN for ``channels``×32×32 images, in eval mode."""
    return _seeded(12, lambda: SmallCNN(channels, classes))


def transformer_block(d_model: int = 64, nhead: int = 4) -> TransformerBlock:
    """A seeded transformer encoder layer (batch first), in eval mode."""
    return _seeded(13, lambda: TransformerBlock(d_model, nhead))
