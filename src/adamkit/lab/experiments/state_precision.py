"""Optimizer state in bfloat16 and 8 bits against float32 (Dettmers, Lewis, Shleifer &
Zettlemoyer, *8-bit Optimizers via Block-wise Quantization*, ICLR 2022): Adam and AdamW on
digits' MLP and CNN.

Per model and optimizer, the lr is the best of a grid with float32 state (the lab's
protocol: same initial weights and mini-batches); bfloat16 (stochastic rounding) and 8-bit
state (block-wise dynamic quantization) then train from the same starts at that lr. The
claim holds where, for every model and optimizer, the compact states' mean final test
accuracy is within 0.5 percentage points of float32's, and their mean training-loss curve
stays inside float32's spread over the seeds (mean ± 2 standard deviations) at every epoch.
Tensors under 4096 elements keep float32 state (adamkit.precision.MIN_ELEMENTS), as
bitsandbytes does: here the hidden layers' weights are compact, the output layers' not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import grid_search, mean_history, spread, train

MODELS = {"MLP": models.mlp, "CNN": models.cnn}
OPTIMIZERS = {
    "Adam": lambda p, lr, state_dtype: adamkit.Adam(p, lr=lr, state_dtype=state_dtype),
    "AdamW": lambda p, lr, state_dtype: adamkit.AdamW(p, lr=lr, state_dtype=state_dtype),
}
PRECISIONS = {"bfloat16": torch.bfloat16, "8-bit": "8bit"}
ACCURACY_GAP = 0.5  # percentage points
BAND = 2.0  # standard deviations over the seeds


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 10 if settings.quick else 30
    seeds = [settings.seed + i for i in range(3 if settings.quick else 5)]
    grid = [1e-3, 3e-3, 1e-2] if settings.quick else [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "runs": {}}
    for model, build in MODELS.items():
        for name, make in OPTIMIZERS.items():
            label = f"{model}, {name}"

            def one(lr: float, seed: int, make=make, build=build) -> dict[str, list[float]]:
                return train(build, dataset, lambda p, r: make(p, r, None), lr, epochs, seed)

            best = grid_search(one, grid, seeds, settings.progress, f"{label}, float32")
            runs = {"float32": {**best["curves"], "spread": best["train_loss_spread"]}}
            for precision, state_dtype in PRECISIONS.items():
                cells = settings.progress(seeds, f"{label}, {precision}", len(seeds))
                histories = [
                    train(
                        build,
                        dataset,
                        lambda p, r, make=make, s=state_dtype: make(p, r, s),
                        best["lr"],
                        epochs,
                        seed,
                    )
                    for seed in cells
                ]
                runs[precision] = {
                    **mean_history(histories),
                    "spread": spread(histories, "train_loss"),
                }
            results["runs"][label] = {"lr": best["lr"], "precisions": runs}
    return results


def checks(numbers: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Per model, optimizer and compact precision: whether it matches float32, and why."""
    found = []
    for label, result in numbers["runs"].items():
        full = result["precisions"]["float32"]
        for precision in PRECISIONS:
            compact = result["precisions"][precision]
            gap = 100 * (compact["test_accuracy"][-1] - full["test_accuracy"][-1])
            inside = all(
                abs(c - f) <= BAND * s
                for c, f, s in zip(
                    compact["train_loss"], full["train_loss"], full["spread"], strict=True
                )
            )
            held = abs(gap) <= ACCURACY_GAP and inside
            found.append(
                (
                    f"{label}, {precision}",
                    held,
                    f"test accuracy {100 * compact['test_accuracy'][-1]:.2f} % vs float32 "
                    f"{100 * full['test_accuracy'][-1]:.2f} % ({gap:+.2f} pp), loss curve "
                    f"{'inside' if inside else 'outside'} float32's ±{BAND:g} std band",
                )
            )
    return found


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = checks(numbers)
    outcome = verdict_of([held for _, held, _ in found])
    words = "; ".join(f"{label}: {text}" for label, _, text in found)
    return outcome, (
        f"Digits, {numbers['epochs']} epochs, {len(numbers['seeds'])} seeds, each model and "
        f"optimizer at float32's best lr: {words}."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    labels = list(numbers["runs"])
    figure, axes = pyplot().subplots(2, len(labels), figsize=(4.2 * len(labels), 8))
    for column, label in enumerate(labels):
        loss_axis, accuracy_axis = axes[0][column], axes[1][column]
        loss_axis.set_yscale("log")
        for precision, curves in numbers["runs"][label]["precisions"].items():
            plot_epochs(loss_axis, curves["train_loss"], curves["spread"], label=precision)
            accuracy = [100 * a for a in curves["test_accuracy"]]
            plot_epochs(accuracy_axis, accuracy, label=precision)
        loss_axis.set_title(f"{label} (lr {numbers['runs'][label]['lr']:.3g})", fontsize=10)
        loss_axis.set_ylabel("training loss (mean ± std over seeds)")
        accuracy_axis.set_ylabel("test accuracy (%)")
        for axis in (loss_axis, accuracy_axis):
            axis.set_xlabel("epoch")
            axis.legend(fontsize=8)
    title = "Optimizer state in float32, bfloat16 and 8 bits on digits"
    return [save(figure, folder, "state_precision.png", title)]


EXPERIMENT = Experiment(
    name="state-precision",
    claim="Adam's state kept in 8 bits (block-wise dynamic quantization) or in bfloat16 "
    "trains as well as in float32.",
    paper="Dettmers et al. (ICLR 2022), Table 1: 8-bit Adam matches 32-bit Adam on GLUE "
    "fine-tuning, ImageNet classification, language modelling and machine translation, "
    "with the same hyperparameters, at a quarter of the state's memory.",
    run=run,
    plot=plot,
    verdict=verdict,
)
