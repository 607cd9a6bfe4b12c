"""The lab's training protocol (Kingma & Ba §6; Wilson et al.): every optimizer compared
starts from the same initial weights and sees the same mini-batches in the same order; a
learning-rate grid per optimizer; the best setting reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from adamkit.lab import stats
from adamkit.lab.data import Dataset, batches
from adamkit.lab.models import Builder

MakeOptimizer = Callable[[Iterable[Tensor], float], torch.optim.Optimizer]
MakeSchedule = Callable[[torch.optim.Optimizer, int], Any]
History = dict[str, list[float]]


def initial_weights(build: Builder, dataset: Dataset, seed: int) -> dict[str, Tensor]:
    """The model's initial state dict for ``seed``: built once, loaded by every run."""
    torch.manual_seed(seed)
    model = build(tuple(dataset.train_x.shape[1:]), dataset.classes)
    return {name: value.clone() for name, value in model.state_dict().items()}


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def train(
    build: Builder,
    dataset: Dataset,
    make: MakeOptimizer,
    lr: float,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    schedule: MakeSchedule | None = None,
) -> History:
    """Train a model built by ``build`` from :func:`initial_weights` ``(seed)`` with
    ``make(params, lr)``, and where ``schedule`` is given with the lr scheduler
    ``schedule(optimizer, steps_per_epoch)``, stepped after every mini-batch. Per epoch: the
    training loss (mean of the epoch's mini-batch losses, the paper's "training cost"), the
    training and test accuracy. A run whose loss is not finite stops there, its remaining
    epochs recorded as inf loss and chance accuracy."""
    model = build(tuple(dataset.train_x.shape[1:]), dataset.classes)
    model.load_state_dict(initial_weights(build, dataset, seed))
    optimizer = make(model.parameters(), lr)
    scheduler = schedule(optimizer, -(-len(dataset.train_y) // batch_size)) if schedule else None
    order = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    history: History = {"train_loss": [], "train_accuracy": [], "test_accuracy": []}
    for _ in range(epochs):
        model.train()
        losses = []
        for index in batches(len(dataset.train_y), batch_size, order):
            optimizer.zero_grad()
            loss = functional.cross_entropy(model(dataset.train_x[index]), dataset.train_y[index])
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
        mean = math.fsum(losses) / len(losses)
        if not math.isfinite(mean):
            break
        history["train_loss"].append(mean)
        history["train_accuracy"].append(accuracy(model, dataset.train_x, dataset.train_y))
        history["test_accuracy"].append(accuracy(model, dataset.test_x, dataset.test_y))
    missing = epochs - len(history["train_loss"])
    history["train_loss"] += [math.inf] * missing
    history["train_accuracy"] += [1 / dataset.classes] * missing
    history["test_accuracy"] += [1 / dataset.classes] * missing
    return history


def area(history: History) -> float:
    """The mean training loss over the epochs: the area under the curve (inf if diverged)."""
    return math.fsum(history["train_loss"]) / len(history["train_loss"])


def mean_history(runs: Sequence[History]) -> History:
    """The per-epoch mean over seeds of every curve."""
    return {
        key: [math.fsum(v) / len(v) for v in zip(*(r[key] for r in runs), strict=True)]
        for key in runs[0]
    }


def spread(runs: Sequence[History], key: str) -> list[float]:
    """The per-epoch sample standard deviation (n − 1) over seeds of ``key`` (NaN for one
    seed: one run shows no spread)."""
    columns = zip(*(r[key] for r in runs), strict=True)
    return [stats.mean_sd(column)[1] for column in columns]


def final_loss(runs: Sequence[History]) -> float:
    """The mean over seeds of the final training loss."""
    return mean_history(runs)["train_loss"][-1]


def mean_area(runs: Sequence[History]) -> float:
    """The mean over seeds of the area under the training-loss curve."""
    return stats.mean_sd([area(h) for h in runs])[0]


@dataclass(frozen=True)
class Search:
    """A grid search: the lr kept, whether it is at an end of the grid searched, the score of
    every lr searched and its runs (one history per seed, in the seeds' order)."""

    lr: float
    at_edge: bool
    scores: dict[float, float]
    runs: dict[float, list[History]]

    @property
    def kept(self) -> list[History]:
        """The runs of the lr kept."""
        return self.runs[self.lr]

    def scores_text(self) -> dict[str, float]:
        """The scores keyed by the lr written to 3 significant digits (for result.json)."""
        return {f"{lr:.3g}": score for lr, score in self.scores.items()}


def grid_search(
    run: Callable[[float, int], History],
    lrs: Sequence[float],
    seeds: Sequence[int],
    progress: Callable[..., Any],
    label: str,
    score: Callable[[Sequence[History]], float] = final_loss,
    extensions: int = 3,
) -> Search:
    """``run(lr, seed)`` for every lr and seed; the lr of the lowest ``score`` of its runs
    (:func:`stats.best`: exact ties to the middle of the tied range). Where it is at an end of
    the grid, the grid is extended there by its own ratio, up to ``extensions`` times (Wilson
    et al.'s recipe), so that no optimizer is held back by the grid it was given; an lr still
    at an end is flagged ``at_edge``."""
    grid = sorted(lrs)
    runs: dict[float, list[History]] = {}

    def evaluate(new: Sequence[float]) -> None:
        cells = [(lr, seed) for lr in new for seed in seeds]
        for lr, seed in progress(cells, label, len(cells)):
            runs.setdefault(lr, []).append(run(lr, seed))

    def optimum() -> stats.Best:
        return stats.best({lr: score(runs[lr]) for lr in grid})

    evaluate(grid)
    for _ in range(extensions):
        kept = optimum()
        if not kept.at_edge:
            break
        new = grid[-1] ** 2 / grid[-2] if kept.key == grid[-1] else grid[0] ** 2 / grid[1]
        evaluate([new])
        grid = sorted([*grid, new])
    kept = optimum()
    return Search(kept.key, kept.at_edge, {lr: score(runs[lr]) for lr in grid}, runs)
