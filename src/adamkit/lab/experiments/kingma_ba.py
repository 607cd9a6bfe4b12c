"""Kingma & Ba (ICLR 2015) §6: Adam against SGD with Nesterov momentum, AdaGrad, RMSprop and
AdaDelta on logistic regression, an MLP with and without dropout, and a CNN.

The paper's protocol on scikit-learn's digits: the same initial weights and mini-batches
(128) for every optimizer, a learning-rate grid per optimizer, the lr with the lowest final
training loss kept (its curve averaged over the seeds). "As fast" is measured by the mean
training loss over the epochs (the area under the curve): Adam's within 10 % of the best
other optimizer's, or below it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import grid_search, train

MODELS = {
    "logistic regression": models.logistic,
    "MLP": models.mlp,
    "MLP + dropout 0.5": partial(models.mlp, dropout=0.5),
    "CNN": models.cnn,
}
# name -> (constructor taking params and lr, lr grid: quick, full)
OPTIMIZERS = {
    "SGD Nesterov": (
        lambda p, lr: adamkit.SGD(p, lr=lr, momentum=0.9, nesterov=True),
        ([0.03, 0.1, 0.3], [0.01, 0.03, 0.1, 0.3, 1.0]),
    ),
    "AdaGrad": (
        lambda p, lr: adamkit.Adagrad(p, lr=lr),
        ([0.01, 0.03, 0.1], [0.003, 0.01, 0.03, 0.1, 0.3]),
    ),
    "RMSprop": (
        lambda p, lr: adamkit.RMSprop(p, lr=lr),
        ([3e-4, 1e-3, 3e-3], [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
    ),
    "AdaDelta (torch)": (
        lambda p, lr: torch.optim.Adadelta(p, lr=lr),
        ([0.3, 1.0, 3.0], [0.1, 0.3, 1.0, 3.0, 10.0]),
    ),
    "Adam": (
        lambda p, lr: adamkit.Adam(p, lr=lr),
        ([3e-4, 1e-3, 3e-3], [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
    ),
}
TOLERANCE = 1.1  # Adam's area under the loss curve within 10 % of the best other's


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 10 if settings.quick else 40
    seeds = [settings.seed] if settings.quick else [settings.seed + i for i in range(3)]
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "models": {}}
    for model_name, build in MODELS.items():
        per_optimizer = {}
        for name, (make, grids) in OPTIMIZERS.items():
            lrs = grids[0] if settings.quick else grids[1]

            def one(lr: float, seed: int, build=build, make=make) -> dict[str, list[float]]:
                return train(build, dataset, make, lr, epochs, seed)

            label = f"{model_name}: {name}"
            per_optimizer[name] = grid_search(one, lrs, seeds, settings.progress, label)
        results["models"][model_name] = per_optimizer
    return results


def comparison(numbers: dict[str, Any], model: str) -> tuple[float, str, float]:
    """Adam's area under the training-loss curve, the best other optimizer and its area."""
    per_optimizer = numbers["models"][model]
    others = {name: r["area"] for name, r in per_optimizer.items() if name != "Adam"}
    best = min(others, key=others.__getitem__)
    return per_optimizer["Adam"]["area"], best, others[best]


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    holds, parts = [], []
    for model in numbers["models"]:
        adam, best, area = comparison(numbers, model)
        holds.append(adam <= TOLERANCE * area)
        parts.append(f"{model}: Adam {adam:.3f}, best other {best} {area:.3f}")
    outcome = verdict_of(holds)
    sentence = (
        f"Mean training loss over {numbers['epochs']} epochs (lower is faster), each optimizer "
        f"at its best lr, {len(numbers['seeds'])} seed(s): " + "; ".join(parts) + "."
    )
    return outcome, sentence


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, axes = pyplot().subplots(2, 2, figsize=(13, 9))
    for axis, (model, per_optimizer) in zip(axes.flat, numbers["models"].items(), strict=True):
        axis.set_yscale("log")
        for name, result in per_optimizer.items():
            losses, spread = result["curves"]["train_loss"], result["train_loss_spread"]
            plot_epochs(axis, losses, spread, label=lr_label(name, result))
        axis.set_title(model)
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss (cross-entropy)")
        axis.legend(fontsize=8)
    title = "Kingma & Ba §6 on digits: training loss at each optimizer's best lr"
    return [save(figure, folder, "kingma_ba_loss.png", title)]


EXPERIMENT = Experiment(
    name="kingma-ba",
    claim="Adam converges as fast as the best of SGD with Nesterov momentum, AdaGrad, "
    "RMSprop and AdaDelta, or faster, on logistic regression, MLPs (with and without "
    "dropout) and CNNs.",
    paper="Kingma & Ba (ICLR 2015) §6, MNIST and CIFAR-10, minibatch 128, best setting of a "
    "dense hyper-parameter grid: on logistic regression Adam converges like SGD with Nesterov "
    "momentum and faster than AdaGrad (Fig. 1); on the MLP with dropout Adam converges better "
    "than AdaGrad, RMSprop, SGD Nesterov and AdaDelta (Fig. 2); on the CNN Adam and SGD "
    "converge considerably faster than AdaGrad over 45 epochs (Fig. 3).",
    run=run,
    plot=plot,
    verdict=verdict,
)
