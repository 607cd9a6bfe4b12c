"""AdamW with one cosine annealing against AdamWR, its warm restarts (Loshchilov & Hutter,
*Decoupled Weight Decay Regularization*, ICLR 2019, §4.4 and Appendix B; SGDR, ICLR 2017).

Both are the paper's AdamW (decay η_t·λ, ``weight_decay_mode="decoupled_schedule"``) with
normalized weight decay λ = λ_norm·sqrt(b/(B·T)) (:class:`adamkit.schedules.WarmRestarts`
given the batch and data-set sizes), stepped per batch on digits' MLP with the lab's protocol
(same start, same mini-batches, the lr of each chosen by its final training loss). AdamW
anneals once over the whole budget (T = the run's epochs); AdamWR restarts with T_0 = 2
epochs, T_mult = 2, so that its periods end at epochs 2, 6, 14, 30 (, 62): the budget is a
whole number of periods. The claim is about anytime performance: at the end of each of
AdamWR's periods (the paper's recommended snapshots) its test error is compared with AdamW's
at the same epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import grid_search, train

T_0, T_MULT = 2, 2
WEIGHT_DECAY_NORM = 0.05  # the paper's good values: 0.025 and 0.05 (Appendix D)
BATCH_SIZE = 128
QUICK_GRID = [1e-3, 3e-3, 1e-2]
FULL_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def period_ends(epochs: int) -> list[int]:
    """The epochs at which AdamWR's periods end (T_0, T_0 + 2T_0, ...), up to ``epochs``."""
    ends, length = [T_0], T_0
    while ends[-1] + length * T_MULT <= epochs:
        length *= T_MULT
        ends.append(ends[-1] + length)
    return ends


def adamw(params: Any, lr: float) -> adamkit.AdamW:
    """The paper's AdamW; its weight decay is λ_norm until the schedule normalizes it."""
    return adamkit.AdamW(
        params, lr=lr, weight_decay=WEIGHT_DECAY_NORM, weight_decay_mode="decoupled_schedule"
    )


def schedules(dataset_size: int, epochs: int) -> dict[str, Any]:
    """Per method, ``schedule(optimizer, steps_per_epoch)`` for :func:`train`."""

    def warm_restarts(first: int, mult: int) -> Any:
        def schedule(optimizer: Any, steps_per_epoch: int) -> adamkit.schedules.WarmRestarts:
            return adamkit.schedules.WarmRestarts(
                optimizer,
                T_0=first,
                T_mult=mult,
                steps_per_epoch=steps_per_epoch,
                batch_size=BATCH_SIZE,
                dataset_size=dataset_size,
            )

        return schedule

    return {"AdamW (cosine)": warm_restarts(epochs, 1), "AdamWR": warm_restarts(T_0, T_MULT)}


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 30 if settings.quick else 62
    seeds = [settings.seed + i for i in range(2 if settings.quick else 5)]
    grid = QUICK_GRID if settings.quick else FULL_GRID
    results: dict[str, Any] = {
        "epochs": epochs,
        "seeds": seeds,
        "snapshots": period_ends(epochs),
        "weight_decay_norm": WEIGHT_DECAY_NORM,
        "methods": {},
    }
    for name, schedule in schedules(len(dataset.train_y), epochs).items():

        def one(lr: float, seed: int, schedule=schedule) -> dict[str, list[float]]:
            return train(
                models.mlp, dataset, adamw, lr, epochs, seed, BATCH_SIZE, schedule=schedule
            )

        results["methods"][name] = grid_search(one, grid, seeds, settings.progress, name)
    return results


def test_errors(numbers: dict[str, Any], name: str) -> list[float]:
    """The test error (%) of ``name`` at each of AdamWR's snapshots."""
    accuracy = numbers["methods"][name]["curves"]["test_accuracy"]
    return [100 * (1 - accuracy[epoch - 1]) for epoch in numbers["snapshots"]]


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """Reproduced when AdamWR's test error is at most AdamW's at every snapshot before the
    last (anytime), partly when at some."""
    cosine, restarts = test_errors(numbers, "AdamW (cosine)"), test_errors(numbers, "AdamWR")
    anytime = [r <= c for c, r in zip(cosine[:-1], restarts[:-1], strict=True)]
    outcome = verdict_of(anytime)
    pairs = ", ".join(
        f"epoch {epoch}: {r:.2f} vs {c:.2f}"
        for epoch, c, r in zip(numbers["snapshots"], cosine, restarts, strict=True)
    )
    lrs = ", ".join(f"{name} {result['lr']:.3g}" for name, result in numbers["methods"].items())
    return outcome, (
        f"Digits MLP, {numbers['epochs']} epochs, {len(numbers['seeds'])} seeds, lr by final "
        f"training loss ({lrs}): test error (%) AdamWR vs AdamW with one cosine at the end of "
        f"AdamWR's periods: {pairs}; AdamWR lower at {sum(anytime)} of the {len(anytime)} "
        "snapshots before the last."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, (error_axis, loss_axis) = pyplot().subplots(1, 2, figsize=(13, 4.8))
    error_axis.set_yscale("log")
    loss_axis.set_yscale("log")
    for name, result in numbers["methods"].items():
        curves = result["curves"]
        error = [100 * (1 - a) for a in curves["test_accuracy"]]
        color = plot_epochs(error_axis, error, label=lr_label(name, result))
        plot_epochs(loss_axis, curves["train_loss"], label=lr_label(name, result), color=color)
        if name == "AdamWR":
            for axis in (error_axis, loss_axis):
                for epoch in numbers["snapshots"]:
                    axis.axvline(epoch, color=color, linestyle=":", linewidth=0.8)
    error_axis.set_ylabel("test error (%)")
    loss_axis.set_ylabel("training loss (cross-entropy)")
    for axis in (error_axis, loss_axis):
        axis.set_xlabel("epoch (dotted: end of an AdamWR period)")
        axis.legend(fontsize=8)
    title = (
        f"AdamW with one cosine annealing vs AdamWR (T_0={T_0}, T_mult={T_MULT}), normalized "
        f"weight decay {numbers['weight_decay_norm']}, mean of {len(numbers['seeds'])} seeds"
    )
    return [save(figure, folder, "restarts.png", title)]


EXPERIMENT = Experiment(
    name="restarts",
    claim="Warm restarts give better anytime performance: AdamWR's snapshots at the end of its "
    "periods beat AdamW annealed once over the whole budget at the same epochs.",
    paper="Loshchilov & Hutter (ICLR 2019) §4.4, Fig. 4: on CIFAR-10 and ImageNet32x32 AdamWR "
    "speeds up AdamW's anytime performance by up to 10× (at its first restarts), with "
    "normalized weight decay λ_norm 0.025–0.05; SGDR (ICLR 2017) showed the same for SGD.",
    run=run,
    plot=plot,
    verdict=verdict,
)
