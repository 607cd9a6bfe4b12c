"""Wilson, Roelofs, Stern, Srebro & Recht, *The Marginal Value of Adaptive Gradient Methods
in Machine Learning* (NeurIPS 2017): SGD with momentum generalizes at least as well as the
adaptive methods, even where these reach an equal or lower training loss; and Keskar &
Socher, *Improving Generalization Performance by Switching from Adam to SGD* (2017): SWATS,
Adam until its projected SGD learning rate settles and SGD after, closes that gap.

Wilson et al.'s protocol on digits' MLP (two hidden layers of 128 ReLU units: about 26 000
weights for 1 347 training images, and no regularisation, so that the optimizer's own bias is
all that differs): per optimizer a grid of lrs 2^k over five consecutive integers k (three in
the quick run), extended past a best end (:func:`adamkit.lab.training.grid_search`), the lr
with the lowest mean final *training* loss kept; the same initial weights and mini-batches
for every optimizer; several seeds, the curves' mean and spread over them. The lr stays
constant (Wilson et al. also tuned a decay scheme). adamkit's defaults apart from the lr:
SGD with heavy-ball momentum 0.9, AdamW with its default decoupled weight decay 0.01 (without
it AdamW is Adam), no weight decay for the others (Wilson et al. added none beyond the
architecture's), SWATS with the paper's ε = 1e-9 as its switch tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch.optim import Optimizer

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import History, grid_search, spread, train

BATCH_SIZE = 128
# the five exponents k of each grid 2^k (the quick run takes the middle three)
ADAPTIVE_EXPONENTS = (-10, -9, -8, -7, -6)
SGD_EXPONENTS = (-6, -5, -4, -3, -2)
OPTIMIZERS = {
    "SGD": (lambda p, lr: adamkit.SGD(p, lr=lr, momentum=0.9), SGD_EXPONENTS),
    "Adam": (lambda p, lr: adamkit.Adam(p, lr=lr), ADAPTIVE_EXPONENTS),
    "AdamW": (lambda p, lr: adamkit.AdamW(p, lr=lr), ADAPTIVE_EXPONENTS),
    "AMSGrad": (lambda p, lr: adamkit.AMSGrad(p, lr=lr), ADAPTIVE_EXPONENTS),
    "SWATS": (lambda p, lr: adamkit.SWATS(p, lr=lr), ADAPTIVE_EXPONENTS),
}
ADAPTIVE = ("Adam", "AdamW", "AMSGrad")
PAPER = "CIFAR-10 VGG test error, SGD 7.65 ± 0.14 % vs the best adaptive, RMSprop, 9.60 ± 0.19 %"


def grid(exponents: tuple[int, ...], quick: bool) -> list[float]:
    """The lrs 2^k of ``exponents``, the middle three of them in the quick run."""
    return [2.0**k for k in (exponents[1:4] if quick else exponents)]


def switch_record(optimizer: adamkit.SWATS, steps_per_epoch: int) -> dict[str, Any]:
    """Where SWATS switched to SGD (one switch for its single param group): the step, the
    epoch it fell in and the SGD lr Λ; None for each when it never switched."""
    point = optimizer.switch_point(optimizer.param_groups[0]["params"][0])
    if point is None:
        return {"step": None, "epoch": None, "sgd_lr": None}
    return {"step": point.step, "epoch": -(-point.step // steps_per_epoch), "sgd_lr": point.sgd_lr}


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 30 if settings.quick else 60
    seeds = [settings.seed + i for i in range(2 if settings.quick else 5)]
    steps_per_epoch = -(-len(dataset.train_y) // BATCH_SIZE)
    results: dict[str, Any] = {
        "epochs": epochs,
        "seeds": seeds,
        "steps": epochs * steps_per_epoch,
        "optimizers": {},
    }
    for name, (make, exponents) in OPTIMIZERS.items():
        histories: dict[tuple[float, int], History] = {}
        switches: dict[tuple[float, int], dict[str, Any]] = {}

        def one(lr: float, seed: int, make=make, histories=histories, switches=switches) -> History:
            made: list[Optimizer] = []

            def keep(params: Any, lr: float) -> Optimizer:
                made.append(make(params, lr))
                return made[-1]

            histories[lr, seed] = train(models.mlp, dataset, keep, lr, epochs, seed, BATCH_SIZE)
            if isinstance(made[0], adamkit.SWATS):
                switches[lr, seed] = switch_record(made[0], steps_per_epoch)
            return histories[lr, seed]

        lrs = grid(exponents, settings.quick)
        result = grid_search(one, lrs, seeds, settings.progress, name)
        kept = [histories[result["lr"], seed] for seed in seeds]
        for key in ("train_accuracy", "test_accuracy"):
            result[f"{key}_spread"] = spread(kept, key)
        if switches:
            result["switches"] = [switches[result["lr"], seed] for seed in seeds]
        results["optimizers"][name] = result
    return results


def final_error(numbers: dict[str, Any], name: str) -> tuple[float, float]:
    """The final test error of ``name`` (%), its mean and its spread over the seeds."""
    result = numbers["optimizers"][name]
    accuracy = result["curves"]["test_accuracy"][-1]
    return 100 * (1 - accuracy), 100 * result["test_accuracy_spread"][-1]


def no_worse(numbers: dict[str, Any], name: str, other: str) -> bool:
    """Whether ``name``'s final test error exceeds ``other``'s by no more than their spreads
    over the seeds combined (√(s₁² + s₂²))."""
    error, error_spread = final_error(numbers, name)
    other_error, other_spread = final_error(numbers, other)
    return error <= other_error + math.hypot(error_spread, other_spread)


def best_adaptive(numbers: dict[str, Any]) -> str:
    """Adam, AdamW or AMSGrad: the one with the lowest final test error."""
    return min(ADAPTIVE, key=lambda name: final_error(numbers, name)[0])


def claims(numbers: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Per paper: whether its claim holds, and the numbers in words. Wilson et al.: SGD's
    test error no worse than the best adaptive method's, within their spread. Keskar &
    Socher: SWATS switched (in some seed), its test error is no worse than Adam's within
    their spread and, where SGD is ahead of Adam beyond theirs, nearer SGD's than Adam's is."""
    sgd, sgd_spread = final_error(numbers, "SGD")
    best = best_adaptive(numbers)
    other, other_spread = final_error(numbers, best)
    swats, _ = final_error(numbers, "SWATS")
    adam, _ = final_error(numbers, "Adam")
    switched = any(s["step"] is not None for s in numbers["optimizers"]["SWATS"]["switches"])
    gap = not no_worse(numbers, "Adam", "SGD")
    return {
        "Wilson et al.": (
            no_worse(numbers, "SGD", best),
            f"SGD {sgd:.2f} % vs the best adaptive, {best}, {other:.2f} % (difference "
            f"{sgd - other:+.2f}, spreads combined {math.hypot(sgd_spread, other_spread):.2f})",
        ),
        "Keskar & Socher": (
            switched
            and no_worse(numbers, "SWATS", "Adam")
            and (not gap or abs(swats - sgd) < abs(adam - sgd)),
            f"SWATS {swats:.2f} % vs Adam {adam:.2f} % and SGD {sgd:.2f} %; "
            + switches_text(numbers),
        ),
    }


def switches_text(numbers: dict[str, Any]) -> str:
    """SWATS's switch per seed at its chosen lr, in words."""
    switches = numbers["optimizers"]["SWATS"]["switches"]
    if all(s["step"] is None for s in switches):
        return f"SWATS never switched to SGD in {numbers['steps']} steps (it ran as Adam)"
    points = ", ".join(
        "never"
        if s["step"] is None
        else f"step {s['step']} (epoch {s['epoch']}, Λ {s['sgd_lr']:.3g})"
        for s in switches
    )
    return f"SWATS switched at {points}"


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = claims(numbers)
    holds = [held for held, _ in found.values()]
    outcome = verdict_of(holds)
    errors = ", ".join(
        "{} {:.2f} ± {:.2f} % (lr {:.3g}, loss {:.2g})".format(
            name, *final_error(numbers, name), r["lr"], r["curves"]["train_loss"][-1]
        )
        for name, r in numbers["optimizers"].items()
    )
    words = "; ".join(
        f"{paper}: {text} ({'holds' if held else 'does not hold'})"
        for paper, (held, text) in found.items()
    )
    return outcome, (
        f"Digits MLP, {numbers['epochs']} epochs, {len(numbers['seeds'])} seeds, lr 2^k by final "
        f"training loss; final test error (mean ± spread over seeds), lr, final training loss: "
        f"{errors}. {words}. Paper: {PAPER}."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, axes = pyplot().subplots(1, 3, figsize=(17, 4.8))
    keys = ("train_accuracy", "test_accuracy")
    axes[0].set_yscale("log")
    for name, result in numbers["optimizers"].items():
        switches = result.get("switches", [])
        label = lr_label(name, result)
        if switches and all(s["step"] is None for s in switches):
            label += ", never switched"
        color = plot_epochs(axes[0], result["curves"]["train_loss"], label=label)
        for axis, key in zip(axes[1:], keys, strict=True):
            mean = [100 * a for a in result["curves"][key]]
            plot_epochs(axis, mean, [100 * s for s in result[f"{key}_spread"]], color=color)
        for axis in axes:
            for switch in switches:
                if switch["epoch"] is not None:
                    axis.axvline(switch["epoch"], color=color, linestyle="--")
    lowest = min(100 * r["curves"]["test_accuracy"][-1] for r in numbers["optimizers"].values())
    axes[0].set_ylabel("training loss (cross-entropy, mean)")
    axes[0].legend(fontsize=8)
    for axis, key in zip(axes[1:], keys, strict=True):
        axis.set_ylim(max(lowest - 5, 0), 100.5)
        axis.set_ylabel(f"{key.replace('_', ' ')} (%, mean ± spread)")
    for axis in axes:
        axis.set_xlabel("epoch (dashed: SWATS's switch to SGD)")
    title = (
        "Wilson et al. on digits' MLP: each optimizer at its lr by final training loss, "
        f"over {len(numbers['seeds'])} seeds"
    )
    return [save(figure, folder, "generalization.png", title)]


EXPERIMENT = Experiment(
    name="generalization",
    claim="SGD with momentum generalizes at least as well as Adam, AdamW and AMSGrad, even "
    "where these reach an equal or lower training loss (Wilson et al.); SWATS, switching from "
    "Adam to SGD, closes the gap (Keskar & Socher).",
    paper="Wilson et al. (NeurIPS 2017): on CIFAR-10 (VGG with batch norm and dropout, lr 2^k "
    "over five k by final training loss, 5 seeds) SGD's test error is 7.65 ± 0.14 % against "
    "9.60 ± 0.19 % for the best adaptive method, RMSprop; SGD is ahead on their other tasks "
    "too, even where the adaptive methods reach an equal or lower training loss. Keskar & "
    "Socher (2017): SWATS closes the gap between Adam and SGD on most of their CIFAR-10/100, "
    "Tiny-ImageNet and language-modelling tasks.",
    run=run,
    plot=plot,
    verdict=verdict,
)
