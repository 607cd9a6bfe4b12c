"""Kingma & Ba (ICLR 2015) §6: Adam against SGD with Nesterov momentum, AdaGrad, RMSprop and
AdaDelta on logistic regression, an MLP with and without dropout, and a CNN.

The paper's protocol: the same initial weights and mini-batches (128) for every optimizer, a
learning-rate grid per optimizer, the best setting reported. "How fast" is one number, the
area under the training-loss curve (the mean training loss over the epochs), and that same
number both chooses each optimizer's lr (its mean over the seeds) and scores it: Adam is as
fast as the best other optimizer when the paired interval over the seeds of the ratio of
their areas lies below 1 + the margin (non-inferiority, the claim being "as fast as").
Quick runs train logistic regression and the MLP only (the models with dropout and the CNN
cost too much for the demo's budget); full runs train all four.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab import data, models, stats
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import (
    History,
    area,
    grid_search,
    mean_area,
    mean_history,
    spread,
    train,
)

MODELS = {
    "logistic regression": models.logistic,
    "MLP": models.mlp,
    "MLP + dropout 0.5": partial(models.mlp, dropout=0.5),
    "CNN": models.cnn,
}
QUICK_MODELS = ("logistic regression", "MLP")
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
        ([1e-3, 3e-3, 1e-2], [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
    ),
    "AdaDelta (torch)": (
        lambda p, lr: torch.optim.Adadelta(p, lr=lr),
        ([1.0, 3.0, 10.0], [0.3, 1.0, 3.0, 10.0, 30.0]),
    ),
    "Adam": (
        lambda p, lr: adamkit.Adam(p, lr=lr),
        ([1e-3, 3e-3, 1e-2], [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
    ),
}
MARGIN = 0.10  # Adam's area may exceed the best other's by at most 10 % ("as fast as")
EXTENSIONS = 3  # a grid is extended past a best end at most this many times
RULE = (
    "Per model and optimizer, every lr of the grid is trained from the same initial weights "
    "and mini-batches in every seed (quick: 3 seeds, 5 epochs, logistic regression and the "
    "MLP; full: 5 seeds, 40 epochs, the four models). Speed is the area under the training-"
    "loss curve (the mean training loss over the epochs); the same number chooses the lr: the "
    "lowest mean area over the seeds (stats.best, exact ties to the middle of the tied range), "
    f"the grid extended by its own ratio past a best end up to {EXTENSIONS} times, an lr still "
    "at an end flagged. The best other optimizer is the one of lowest mean area. Per model, "
    "Adam is as fast when the paired 95 % Student-t interval over the seeds of log(Adam's "
    "area) − log(the best other's) lies wholly below log(1 + "
    f"{MARGIN:g}) (Adam at most {MARGIN:.0%} slower: non-inferiority); an interval reaching "
    "past it decides nothing and does not hold (so one seed never holds). Reproduced when it "
    "holds for every model, partly for some, not reproduced for none."
)


def search(
    run: Callable[[float, int], History],
    lrs: Sequence[float],
    seeds: Sequence[int],
    progress: Callable[..., Any],
    label: str,
) -> dict[str, Any]:
    """:func:`grid_search` by the mean area over the seeds, extended up to
    :data:`EXTENSIONS` times. Returns the lr kept, whether it is still at an end of the grid,
    the mean area of every lr searched, the kept lr's per-seed areas, mean curves and their
    per-epoch sample standard deviation."""
    found = grid_search(run, lrs, seeds, progress, label, mean_area, EXTENSIONS)
    return {
        "lr": found.lr,
        "at_edge": found.at_edge,
        "area_per_lr": found.scores_text(),
        "areas": [area(h) for h in found.kept],
        "area": found.scores[found.lr],
        "curves": mean_history(found.kept),
        "train_loss_sd": spread(found.kept, "train_loss"),
    }


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 5 if settings.quick else 40
    seeds = [settings.seed + i for i in range(3 if settings.quick else 5)]
    names = QUICK_MODELS if settings.quick else tuple(MODELS)
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "margin": MARGIN, "models": {}}
    for model_name in names:
        build = MODELS[model_name]
        per_optimizer = {}
        for name, (make, grids) in OPTIMIZERS.items():
            lrs = grids[0] if settings.quick else grids[1]

            def one(lr: float, seed: int, build=build, make=make) -> History:
                return train(build, dataset, make, lr, epochs, seed)

            label = f"{model_name}: {name}"
            per_optimizer[name] = search(one, lrs, seeds, settings.progress, label)
        results["models"][model_name] = per_optimizer
    return results


def comparison(numbers: dict[str, Any], model: str) -> dict[str, Any]:
    """Adam against the other optimizer of lowest mean area on ``model``: the name of that
    optimizer, the paired interval of log(Adam's area) − log(its area) over the seeds and the
    decision against the margin: "no worse", "slower" (the whole interval above the margin)
    or "undecided"."""
    per_optimizer = numbers["models"][model]
    others = {name: r for name, r in per_optimizer.items() if name != "Adam"}
    best = min(others, key=lambda name: (others[name]["area"], name))
    interval = stats.paired(
        [math.log(a) for a in per_optimizer["Adam"]["areas"]],
        [math.log(a) for a in others[best]["areas"]],
    )
    margin = math.log(1 + numbers["margin"])
    if stats.no_worse(interval, margin):
        decision = "no worse"
    elif interval.low > margin:
        decision = "slower"
    else:
        decision = "undecided"
    return {"other": best, "interval": interval, "decision": decision}


def ratio_text(interval: stats.Interval) -> str:
    """A paired interval of log-ratios as the ratio and its interval."""
    if interval.n < 2:
        return f"{math.exp(interval.mean):.3f} (1 seed, no interval)"
    return (
        f"{math.exp(interval.mean):.3f} [{math.exp(interval.low):.3f}, "
        f"{math.exp(interval.high):.3f}]"
    )


def setting(name: str, result: dict[str, Any]) -> str:
    edge = ", at the grid's end" if result["at_edge"] else ""
    return f"{name} {result['area']:.3f} (lr {result['lr']:.3g}{edge})"


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    holds, parts = [], []
    for model, per_optimizer in numbers["models"].items():
        compared = comparison(numbers, model)
        holds.append(compared["decision"] == "no worse")
        parts.append(
            f"{model}: {setting('Adam', per_optimizer['Adam'])} vs "
            f"{setting(compared['other'], per_optimizer[compared['other']])}, ratio "
            f"{ratio_text(compared['interval'])} → {compared['decision']}"
        )
    seeds = len(numbers["seeds"])
    sentence = (
        f"Area under the training-loss curve over {numbers['epochs']} epochs (lower is "
        f"faster), each optimizer at the lr of its lowest mean area, {seeds} seed(s); Adam's "
        f"area over the best other's (95 % CI; 'no worse' below {1 + numbers['margin']:g}): "
        + "; ".join(parts)
        + "."
    )
    if seeds < 2:
        sentence += " One seed gives no interval: it decides nothing."
    return verdict_of(holds), sentence


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    count = len(numbers["models"])
    columns = min(count, 2)
    figure, axes = pyplot().subplots(
        -(-count // columns),
        columns,
        figsize=(6.5 * columns, 4.5 * -(-count // columns)),
        squeeze=False,
    )
    for axis, (model, per_optimizer) in zip(axes.flat, numbers["models"].items(), strict=True):
        axis.set_yscale("log")
        for name, result in per_optimizer.items():
            losses, spread = result["curves"]["train_loss"], result["train_loss_sd"]
            plot_epochs(axis, losses, spread, label=lr_label(name, result))
        axis.set_title(model)
        axis.set_xlabel("epoch")
        axis.set_ylabel("training loss (cross-entropy)")
        axis.legend(fontsize=8)
    title = (
        "Kingma & Ba §6: training loss at each optimizer's lr of lowest area, mean ± sample sd "
        f"over {len(numbers['seeds'])} seeds"
    )
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
    rule=RULE,
)
