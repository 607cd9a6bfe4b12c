"""Loshchilov & Hutter (ICLR 2019), *Decoupled Weight Decay Regularization*, Fig. 2: the
learning-rate × weight-decay grid of test errors, L2 regularisation against decoupled weight
decay, for Adam and for SGD with momentum.

On digits' MLP, every cell trains from the same initial weights on the same mini-batches.
Decoupled decay is the paper's (θ ← θ − η_t·λ·θ with the schedule multiplier η_t = 1, no
schedule: ``weight_decay_mode="decoupled_schedule"``), so λ does not scale with the lr; L2
adds λθ to the gradient. Momentum is Sutskever's form for both SGDs (the paper's
Algorithm 1). "Axis-aligned" is measured by the slope of log10(best λ) against log10(lr)
over the rows of the grid: about −1 when the good λ moves inversely with the lr (a
diagonal basin), about 0 when it does not (axis-aligned).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of
from adamkit.lab.training import train

# name -> (constructor(params, lr, wd), lr grid, weight-decay grid) per mode (quick, full)
SGD_MOMENTUM = {"momentum": 0.9, "momentum_form": "sutskever"}
OPTIMIZERS = {
    "Adam (L2)": lambda p, lr, wd: adamkit.Adam(p, lr=lr, weight_decay=wd),
    "AdamW": lambda p, lr, wd: adamkit.AdamW(
        p, lr=lr, weight_decay=wd, weight_decay_mode="decoupled_schedule"
    ),
    "SGD (L2)": lambda p, lr, wd: adamkit.SGD(p, lr=lr, weight_decay=wd, **SGD_MOMENTUM),
    "SGDW": lambda p, lr, wd: adamkit.SGDW(p, lr=lr, weight_decay=wd, momentum=0.9),
}
LRS = {
    "Adam (L2)": ([3e-4, 1e-3, 3e-3, 1e-2], [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
    "SGD (L2)": ([3e-3, 1e-2, 3e-2, 1e-1], [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]),
}
WEIGHT_DECAYS = {
    "L2": ([1e-4, 1e-3, 1e-2, 1e-1], [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "decoupled": ([1e-5, 1e-4, 1e-3, 1e-2], [3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]),
}
PAIRS = (("Adam (L2)", "AdamW"), ("SGD (L2)", "SGDW"))


def grids(name: str, quick: bool) -> tuple[list[float], list[float]]:
    family = "Adam (L2)" if name.startswith("Adam") else "SGD (L2)"
    kind = "L2" if "L2" in name else "decoupled"
    pick = 0 if quick else 1
    return LRS[family][pick], WEIGHT_DECAYS[kind][pick]


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 15 if settings.quick else 40
    seeds = [settings.seed] if settings.quick else [settings.seed + i for i in range(2)]
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "optimizers": {}}
    for name, make in OPTIMIZERS.items():
        lrs, decays = grids(name, settings.quick)
        cells = [(lr, wd, seed) for lr in lrs for wd in decays for seed in seeds]
        error: dict[tuple[float, float], list[float]] = {}
        for lr, wd, seed in settings.progress(cells, name, len(cells)):

            def build(params, lr, wd=wd, make=make):
                return make(params, lr, wd)

            history = train(models.mlp, dataset, build, lr, epochs, seed)
            error.setdefault((lr, wd), []).append(1 - history["test_accuracy"][-1])
        results["optimizers"][name] = {
            "lrs": lrs,
            "weight_decays": decays,
            "test_error": [[math.fsum(error[lr, wd]) / len(seeds) for wd in decays] for lr in lrs],
        }
    for table in results["optimizers"].values():
        table.update(alignment(table))
    return results


def alignment(table: dict[str, Any]) -> dict[str, Any]:
    """Per row (lr) the best weight decay; the least-squares slope of log10(best λ) against
    log10(lr); the best cell."""
    lrs, decays, errors = table["lrs"], table["weight_decays"], table["test_error"]
    best_wd = [decays[min(range(len(decays)), key=row.__getitem__)] for row in errors]
    xs = [math.log10(lr) for lr in lrs]
    ys = [math.log10(wd) for wd in best_wd]
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    slope = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.fsum(
        (x - mx) ** 2 for x in xs
    )
    flat = [(errors[i][j], i, j) for i in range(len(lrs)) for j in range(len(decays))]
    best_error, i, j = min(flat)
    return {
        "best_wd_per_lr": best_wd,
        "slope": slope,
        "best": {"lr": lrs[i], "weight_decay": decays[j], "test_error": best_error},
    }


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    """For each pair: the decoupled form's slope is closer to 0 than the L2 form's, and its
    best test error is no worse. Reproduced when all four checks hold, partly when some do."""
    checks, parts = [], []
    for coupled, decoupled in PAIRS:
        a, b = numbers["optimizers"][coupled], numbers["optimizers"][decoupled]
        checks += [
            abs(b["slope"]) < abs(a["slope"]),
            b["best"]["test_error"] <= a["best"]["test_error"],
        ]
        parts.append(
            f"{coupled}: slope {a['slope']:+.2f}, best error {100 * a['best']['test_error']:.2f} %"
            f"; {decoupled}: slope {b['slope']:+.2f}, best error "
            f"{100 * b['best']['test_error']:.2f} %"
        )
    outcome = verdict_of(checks)
    sentence = (
        "Slope of log10(best weight decay) against log10(lr), −1 diagonal, 0 axis-aligned, "
        f"and the best test error ({numbers['epochs']} epochs, {len(numbers['seeds'])} "
        "seed(s)): " + "; ".join(parts) + "."
    )
    return outcome, sentence


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, axes = pyplot().subplots(2, 2, figsize=(12, 10))
    for axis, (name, table) in zip(axes.flat, numbers["optimizers"].items(), strict=True):
        errors = [[100 * e for e in row] for row in table["test_error"]]
        image = axis.imshow(errors, origin="lower", cmap="viridis_r", aspect="auto")
        axis.set_xticks(range(len(table["weight_decays"])))
        axis.set_xticklabels([f"{wd:.0e}" for wd in table["weight_decays"]], rotation=45)
        axis.set_yticks(range(len(table["lrs"])))
        axis.set_yticklabels([f"{lr:.0e}" for lr in table["lrs"]])
        axis.set_xlabel("weight decay λ" + (" (L2)" if "L2" in name else " (decoupled)"))
        axis.set_ylabel("learning rate")
        for i, wd in enumerate(table["best_wd_per_lr"]):
            j = table["weight_decays"].index(wd)
            axis.plot(j, i, "o", markerfacecolor="none", markeredgecolor="white", markersize=14)
        best = table["best"]
        i, j = table["lrs"].index(best["lr"]), table["weight_decays"].index(best["weight_decay"])
        axis.plot(j, i, "*", color="red", markersize=16, label="best cell")
        axis.plot(
            [], [], "o", markerfacecolor="none", markeredgecolor="grey", label="best λ per lr"
        )
        axis.set_title(f"{name}: slope {table['slope']:+.2f}")
        axis.legend(loc="upper right", fontsize=8)
        figure.colorbar(image, ax=axis, label="test error (%)")
    title = "Loshchilov & Hutter Fig. 2 on digits: test error over lr × weight decay"
    return [save(figure, folder, "weight_decay_heatmaps.png", title)]


EXPERIMENT = Experiment(
    name="weight-decay",
    claim="With decoupled weight decay (AdamW, SGDW) the good weight decay does not depend on "
    "the learning rate (an axis-aligned basin), with L2 it does (a diagonal one), and AdamW's "
    "best is better than Adam with L2.",
    paper="Loshchilov & Hutter (ICLR 2019) Fig. 2, 26 2x64d ResNet on CIFAR-10, 100 epochs: "
    "SGD-L2 and Adam-L2 have their good settings along a diagonal of the lr × λ grid, SGDW "
    "and AdamW roughly axis-aligned; AdamW's best is substantially better than Adam-L2's, "
    "whose best non-zero L2 was no better than λ = 0, and rivals SGD's.",
    run=run,
    plot=plot,
    verdict=verdict,
)
