"""AdamW with one cosine annealing against AdamWR, its warm restarts (Loshchilov & Hutter,
*Decoupled Weight Decay Regularization*, ICLR 2019, §4.4 and Appendix B; SGDR, ICLR 2017).

Both are the paper's AdamW (decay η_t·λ, ``weight_decay_mode="decoupled_schedule"``) with
normalized weight decay λ = λ_norm·sqrt(b/(B·T)) (:class:`adamkit.schedules.WarmRestarts`
given the batch and data-set sizes), stepped per batch on the MLP with the lab's protocol
(same start, same mini-batches per seed, the lr of each chosen by its final training loss).
AdamW anneals once over the whole budget (T = the run's epochs); AdamWR restarts with
T_0 = 2 epochs, T_mult = 2, so that its periods end at epochs 2, 6, 14, 30 (, 62): the budget
is a whole number of periods. The claim is about anytime performance: at the end of each of
AdamWR's periods before the last (the paper's recommended snapshots) its test error is
compared with AdamW's at the same epoch by the paired interval over the seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adamkit
from adamkit.lab import data, models, stats
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import History, grid_search, mean_history, spread, train

T_0, T_MULT = 2, 2
WEIGHT_DECAY_NORM = 0.05  # the paper's good values: 0.025 and 0.05 (Appendix D)
BATCH_SIZE = 128
QUICK_GRID = [3e-3, 1e-2, 3e-2]
FULL_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
RULE = (
    "Each method's lr is the one of lowest mean final training loss over the seeds (quick: "
    "3 seeds, 14 epochs, grid 3e-3, 1e-2, 3e-2; full: 5 seeds, 62 epochs, grid 3e-4 … 3e-2; "
    "extended past a best end up to 3 times). At the end of each of AdamWR's periods before "
    "the last (epochs 2, 6 quick; 2, 6, 14, 30 full), the paired difference of test error "
    "AdamWR − AdamW (one cosine) over the seeds and its 95 % Student-t interval: AdamWR is "
    "ahead there when the whole interval is below 0, behind when above, undecided otherwise "
    "(one seed is always undecided). Reproduced when AdamWR is ahead at every such snapshot, "
    "partly when at some, not reproduced when at none. The last snapshot, where both have "
    "annealed over the same budget, is reported and not judged."
)


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
    epochs = 14 if settings.quick else 62
    seeds = [settings.seed + i for i in range(3 if settings.quick else 5)]
    grid = QUICK_GRID if settings.quick else FULL_GRID
    results: dict[str, Any] = {
        "epochs": epochs,
        "seeds": seeds,
        "snapshots": period_ends(epochs),
        "weight_decay_norm": WEIGHT_DECAY_NORM,
        "methods": {},
    }
    for name, schedule in schedules(len(dataset.train_y), epochs).items():

        def one(lr: float, seed: int, schedule=schedule) -> History:
            return train(
                models.mlp, dataset, adamw, lr, epochs, seed, BATCH_SIZE, schedule=schedule
            )

        found = grid_search(one, grid, seeds, settings.progress, name)
        results["methods"][name] = {
            "lr": found.lr,
            "curves": mean_history(found.kept),
            "train_loss_spread": spread(found.kept, "train_loss"),
            "final_loss_per_lr": found.scores_text(),
            "test_accuracy_per_seed": [h["test_accuracy"] for h in found.kept],
        }
    return results


def test_errors(numbers: dict[str, Any], name: str) -> list[list[float]]:
    """The test error (%) of ``name`` per seed (rows) at each of AdamWR's snapshots."""
    return [
        [100 * (1 - accuracy[epoch - 1]) for epoch in numbers["snapshots"]]
        for accuracy in numbers["methods"][name]["test_accuracy_per_seed"]
    ]


READING = {"lower": "ahead", "higher": "behind", "undecided": "undecided"}


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """By :data:`RULE`: AdamWR ahead (the paired interval of the test-error difference below
    0) at every snapshot before the last: reproduced; at some: partly; at none: not
    reproduced."""
    cosine, warm = test_errors(numbers, "AdamW (cosine)"), test_errors(numbers, "AdamWR")
    ahead, parts = [], []
    for k, epoch in enumerate(numbers["snapshots"]):
        ours, theirs = [row[k] for row in warm], [row[k] for row in cosine]
        interval = stats.paired(ours, theirs)
        reading = READING[stats.decision(interval)]
        judged = k < len(numbers["snapshots"]) - 1
        if judged:
            ahead.append(reading == "ahead")
        parts.append(
            f"epoch {epoch}: {stats.mean_sd(ours)[0]:.2f} vs {stats.mean_sd(theirs)[0]:.2f}, "
            f"difference {interval.text()} → {reading}" + ("" if judged else " (not judged)")
        )
    lrs = ", ".join(f"{name} {result['lr']:.3g}" for name, result in numbers["methods"].items())
    return verdict_of(ahead), (
        f"MLP, {numbers['epochs']} epochs, {len(numbers['seeds'])} seeds, lr by final "
        f"training loss ({lrs}): mean test error (%) AdamWR vs AdamW with one cosine at the end "
        f"of AdamWR's periods, and the paired difference: {'; '.join(parts)}. AdamWR ahead at "
        f"{sum(ahead)} of the {len(ahead)} snapshots before the last."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, (error_axis, loss_axis) = pyplot().subplots(1, 2, figsize=(13, 4.8))
    error_axis.set_yscale("log")
    loss_axis.set_yscale("log")
    for name, result in numbers["methods"].items():
        curves = result["curves"]
        per_epoch = zip(*result["test_accuracy_per_seed"], strict=True)
        error = [stats.mean_sd([100 * (1 - a) for a in epoch]) for epoch in per_epoch]
        color = plot_epochs(
            error_axis, [m for m, _ in error], [s for _, s in error], label=lr_label(name, result)
        )
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
        f"weight decay {numbers['weight_decay_norm']}, mean (± sample sd) of "
        f"{len(numbers['seeds'])} seeds"
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
    rule=RULE,
)
