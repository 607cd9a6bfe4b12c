"""The lab's models, small enough for 2 CPU cores: logistic regression, an MLP with two
hidden ReLU layers (optionally with dropout), a small CNN.

Every builder takes the input's shape (C, H, W) and the number of classes, so the same
experiment runs on digits (1×8×8), MNIST (1×28×28) or CIFAR-10 (3×32×32).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

Shape = tuple[int, int, int]
Builder = Callable[[Shape, int], nn.Module]


def logistic(shape: Shape, classes: int) -> nn.Module:
    """Multi-class logistic regression on the pixels (Kingma & Ba §6.1)."""
    channels, height, width = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, classes))


def mlp(shape: Shape, classes: int, hidden: int = 128, dropout: float = 0.0) -> nn.Module:
    """Two fully connected hidden ReLU layers (Kingma & Ba §6.2 use 1 000 units on MNIST),
    dropout after each when ``dropout`` > 0."""
    channels, height, width = shape
    layers: list[nn.Module] = [nn.Flatten()]
    size = channels * height * width
    for _ in range(2):
        layers += [nn.Linear(size, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        size = hidden
    layers.append(nn.Linear(size, classes))
    return nn.Sequential(*layers)


def cnn(shape: Shape, classes: int, width: int = 16) -> nn.Module:
    """Two stages of 3×3 convolution, ReLU and 2×2 max-pooling, then a ReLU hidden layer
    (a small version of Kingma & Ba §6.3's c64-c64-c128-1000)."""
    channels, height, size = shape
    features = 2 * width * (height // 4) * (size // 4)
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(features, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )
