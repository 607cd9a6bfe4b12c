"""Loshchilov & Hutter (ICLR 2019), *Decoupled Weight Decay Regularization*, Fig. 2: the
learning-rate × weight-decay grid of test errors, L2 regularisation against decoupled weight
decay, for Adam and for SGD with momentum.

On the MLP, every cell trains from the same initial weights on the same mini-batches per seed.
Decoupled decay is the paper's (θ ← θ − η_t·λ·θ with the schedule multiplier η_t = 1, no
schedule: ``weight_decay_mode="decoupled_schedule"``), so λ does not scale with the lr; L2
adds λθ to the gradient. Momentum is Sutskever's form for both SGDs (the paper's
Algorithm 1). The basin's shape is read from each row's best λ (:func:`adamkit.lab.stats.best`
with a tie of :data:`TIE`): only rows whose tied λs reach neither end of the grid locate an
optimum, and the slope of log10(best λ) against log10(lr) over those rows is about −1 for a
diagonal basin (the good λ moves inversely with the lr) and about 0 for an axis-aligned one.
The quick run trains the Adam pair only; the full run both pairs.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import adamkit
from adamkit.lab import data, models, stats
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of
from adamkit.lab.training import train

SGD_MOMENTUM = {"momentum": 0.9, "momentum_form": "sutskever"}
# name -> constructor(params, lr, wd)
OPTIMIZERS = {
    "Adam (L2)": lambda p, lr, wd: adamkit.Adam(p, lr=lr, weight_decay=wd),
    "AdamW": lambda p, lr, wd: adamkit.AdamW(
        p, lr=lr, weight_decay=wd, weight_decay_mode="decoupled_schedule"
    ),
    "SGD (L2)": lambda p, lr, wd: adamkit.SGD(p, lr=lr, weight_decay=wd, **SGD_MOMENTUM),
    "SGDW": lambda p, lr, wd: adamkit.SGDW(p, lr=lr, weight_decay=wd, momentum=0.9),
}
PAIRS = {"quick": (("Adam (L2)", "AdamW"),), "full": (("Adam (L2)", "AdamW"), ("SGD (L2)", "SGDW"))}
# family -> mode -> lr grid; kind of decay -> mode -> λ grid
LRS = {
    "Adam": {"quick": [1e-3, 3e-3, 1e-2], "full": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]},
    "SGD": {"full": [3e-3, 1e-2, 3e-2, 1e-1, 3e-1]},
}
WEIGHT_DECAYS = {
    "L2": {
        "quick": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "full": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    },
    "decoupled": {
        "quick": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "full": [3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3],
    },
}
TIE = 0.01  # test errors within one percentage point of a row's lowest tie
SLOPE = 0.5  # halfway between a diagonal (−1) and an axis-aligned (0) basin
RULE = (
    "Test error after the last epoch of every (lr, λ) cell in every seed (quick: the Adam pair, "
    "3 lrs × 5 λ, 2 seeds, 6 epochs; full: both pairs, 5 lrs × 7 λ, 5 seeds, 40 epochs), mean "
    "over the seeds. Per lr the best λ is stats.best with a tie of "
    f"{100 * TIE:g} percentage point: every λ within it of the row's lowest error ties, the "
    "tie going to the middle of the tied range; a row whose tied λs reach an end of the λ grid "
    "(a flat row, every λ tied, included) locates no optimum and is no evidence. The slope of "
    "log10(best λ) against log10(lr) over the located rows (at least 2, else the shape is "
    f"undetermined): ≤ −{SLOPE:g} diagonal, within ±{SLOPE:g} axis-aligned. Checks: each L2 "
    "form diagonal, each decoupled form axis-aligned, and AdamW's best cell lower than Adam-L2's "
    "(the paired 95 % Student-t interval over the seeds of the difference of their test errors "
    "wholly below 0; best cell: the lowest mean error, exact ties to the middle, one at an end "
    "of a grid flagged). Reproduced when every check holds, partly when some do, not "
    "reproduced when none; an undetermined shape or an interval across 0 does not hold."
)


def grids(name: str, mode: str) -> tuple[list[float], list[float]]:
    """The lr grid and the λ grid of optimizer ``name`` in ``mode`` ("quick" or "full")."""
    family = "Adam" if name.startswith("Adam") else "SGD"
    kind = "L2" if "L2" in name else "decoupled"
    return LRS[family][mode], WEIGHT_DECAYS[kind][mode]


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 6 if settings.quick else 40
    seeds = [settings.seed + i for i in range(2 if settings.quick else 5)]
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "optimizers": {}}
    for name in (name for pair in PAIRS[settings.mode] for name in pair):
        lrs, decays = grids(name, settings.mode)
        cells = [(lr, wd, seed) for lr in lrs for wd in decays for seed in seeds]
        error: dict[tuple[float, float], list[float]] = {}
        for lr, wd, seed in settings.progress(cells, name, len(cells)):
            make = partial(OPTIMIZERS[name], wd=wd)
            history = train(models.mlp, dataset, make, lr, epochs, seed)
            error.setdefault((lr, wd), []).append(1 - history["test_accuracy"][-1])
        results["optimizers"][name] = {
            "lrs": lrs,
            "weight_decays": decays,
            # per lr, per λ: the test error of every seed
            "test_error": [[error[lr, wd] for wd in decays] for lr in lrs],
        }
    return results


def basin(table: dict[str, Any]) -> dict[str, Any]:
    """The shape of one optimizer's grid: the mean test error of every cell, each row's best
    λ, its tied λs and status ("located", "at edge": the tied λs reach an end of the grid,
    "flat": every λ tied), the slope over the located rows (None with fewer than 2) and the
    shape it gives, and the best cell with its per-seed errors."""
    lrs, decays = table["lrs"], table["weight_decays"]
    means = [[stats.mean_sd(seeds)[0] for seeds in row] for row in table["test_error"]]
    rows = []
    for row in means:
        best = stats.best(dict(zip(decays, row, strict=True)), tie=TIE)
        if len(best.ties) == len(decays):
            status = "flat"
        elif {decays[0], decays[-1]} & set(best.ties):
            status = "at edge"
        else:
            status = "located"
        rows.append({"weight_decay": best.key, "ties": list(best.ties), "status": status})
    points = [
        (math.log10(lr), math.log10(row["weight_decay"]))
        for lr, row in zip(lrs, rows, strict=True)
        if row["status"] == "located"
    ]
    slope = None
    if len(points) >= 2:
        mx = math.fsum(x for x, _ in points) / len(points)
        my = math.fsum(y for _, y in points) / len(points)
        slope = math.fsum((x - mx) * (y - my) for x, y in points) / math.fsum(
            (x - mx) ** 2 for x, _ in points
        )
    if slope is None:
        shape = "undetermined"
    elif slope <= -SLOPE:
        shape = "diagonal"
    elif slope < SLOPE:
        shape = "axis-aligned"
    else:
        shape = "tilted the other way"
    by_lr = stats.best({lr: min(row) for lr, row in zip(lrs, means, strict=True)})
    i = lrs.index(by_lr.key)
    by_wd = stats.best(dict(zip(decays, means[i], strict=True)))
    j = decays.index(by_wd.key)
    return {
        "means": means,
        "rows": rows,
        "slope": slope,
        "shape": shape,
        "best": {
            "lr": lrs[i],
            "weight_decay": decays[j],
            "test_error": means[i][j],
            "seeds": table["test_error"][i][j],
            "at_edge": by_lr.at_edge or by_wd.at_edge,
        },
    }


def describe(name: str, found: dict[str, Any]) -> str:
    """One optimizer's shape and best cell in words."""
    statuses = [row["status"] for row in found["rows"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("located", "at edge", "flat"))
    slope = "—" if found["slope"] is None else f"{found['slope']:+.2f}"
    best = found["best"]
    edge = ", at a grid's end" if best["at_edge"] else ""
    return (
        f"{name}: rows {counts}, slope {slope} → {found['shape']}; best "
        f"{100 * best['test_error']:.2f} % (lr {best['lr']:.0e}, λ {best['weight_decay']:.0e}"
        f"{edge})"
    )


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = {name: basin(table) for name, table in numbers["optimizers"].items()}
    checks, parts = [], []
    for coupled, decoupled in PAIRS["full"]:
        if coupled in found:
            checks += [found[coupled]["shape"] == "diagonal"]
            checks += [found[decoupled]["shape"] == "axis-aligned"]
            parts += [describe(coupled, found[coupled]), describe(decoupled, found[decoupled])]
    adamw, adam = found["AdamW"]["best"], found["Adam (L2)"]["best"]
    difference = stats.paired([100 * e for e in adamw["seeds"]], [100 * e for e in adam["seeds"]])
    checks.append(stats.lower(difference))
    reading = {"lower": "AdamW better", "higher": "AdamW worse", "undecided": "undecided"}
    seeds = len(numbers["seeds"])
    sentence = (
        f"Test error after {numbers['epochs']} epochs, mean of {seeds} seed(s); best λ per lr "
        f"with ties within {100 * TIE:g} pp; " + "; ".join(parts) + ". AdamW's best cell − "
        f"Adam-L2's: {difference.text()} pp → {reading[stats.decision(difference)]}."
    )
    if "SGD (L2)" not in found:
        sentence += " The SGD pair runs in the full run only."
    return verdict_of(checks), sentence


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    count = len(numbers["optimizers"])
    figure, axes = pyplot().subplots(
        -(-count // 2), 2, figsize=(12, 5 * -(-count // 2)), squeeze=False
    )
    for axis, (name, table) in zip(axes.flat, numbers["optimizers"].items(), strict=True):
        found = basin(table)
        decays = table["weight_decays"]
        errors = [[100 * e for e in row] for row in found["means"]]
        image = axis.imshow(errors, origin="lower", cmap="viridis_r", aspect="auto")
        axis.set_xticks(range(len(decays)))
        axis.set_xticklabels([f"{wd:.0e}" for wd in decays], rotation=45)
        axis.set_yticks(range(len(table["lrs"])))
        axis.set_yticklabels([f"{lr:.0e}" for lr in table["lrs"]])
        axis.set_xlabel("weight decay λ" + (" (L2)" if "L2" in name else " (decoupled)"))
        axis.set_ylabel("learning rate")
        for i, row in enumerate(found["rows"]):
            ties = [decays.index(wd) for wd in row["ties"]]
            axis.plot(ties, [i] * len(ties), ".", color="white", markersize=5)
            marker = "o" if row["status"] == "located" else "x"
            axis.plot(
                decays.index(row["weight_decay"]),
                i,
                marker,
                markerfacecolor="none",
                markeredgecolor="white",
                markersize=14,
            )
        best = found["best"]
        i, j = table["lrs"].index(best["lr"]), decays.index(best["weight_decay"])
        axis.plot(j, i, "*", color="red", markersize=16, label="best cell")
        axis.plot([], [], "o", markerfacecolor="none", markeredgecolor="grey", label="located")
        axis.plot([], [], "x", color="grey", label="at edge or flat")
        axis.plot([], [], ".", color="grey", label=f"tied (within {100 * TIE:g} pp)")
        slope = "—" if found["slope"] is None else f"{found['slope']:+.2f}"
        axis.set_title(f"{name}: {found['shape']}, slope {slope}")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, fontsize=8)
        figure.colorbar(image, ax=axis, label="test error (%)")
    title = (
        "Loshchilov & Hutter Fig. 2: test error over lr × weight decay, mean of "
        f"{len(numbers['seeds'])} seeds"
    )
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
    rule=RULE,
)
