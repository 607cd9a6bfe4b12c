"""Adam and its variants on one task: NAdam (Dozat 2016), AMSGrad (Reddi et al. 2018) and
ND-Adam (Zhang et al. 2017) on the MLP with the lab's protocol (same initial weights and
mini-batches per seed, an lr grid per optimizer).

Each variant's paper claims an advantage over Adam; the experiment checks one number per
claim, paired over the seeds against Adam's, both at the lr best for that number: NAdam's
mean training loss over the epochs (faster convergence), AMSGrad's final training loss;
ND-Adam's final test error (better generalisation), at the lrs of lowest final training
loss. ND-Adam keeps the hidden layers' weight vectors on the unit sphere; the
output layer and the biases step as Adam (see :func:`nd_adam`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

import adamkit
from adamkit.lab import data, models, stats
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import History, area, grid_search, mean_history, spread, train


def nd_adam(params: Iterable[Tensor], lr: float) -> adamkit.NDAdam:
    """ND-Adam on the hidden layers: the rows of every weight matrix but the last (the
    output layer's, last in ``params`` as in the lab's models) are scaled to unit norm and
    stay on the sphere; the output layer and the biases step as Adam (``vec_axes=()``).

    Unit-norm output vectors in a network without batch norm would cap every logit at the
    norm of the last hidden layer's activations; the authors' code keeps the output layer on
    the sphere but batch-normalises the logits with a fixed scale instead."""
    params = list(params)
    hidden = [p for p in params if p.ndim >= 2][:-1]
    others = [p for p in params if all(p is not h for h in hidden)]
    adamkit.normalize_vectors_(hidden)
    return adamkit.NDAdam([{"params": hidden}, {"params": others, "vec_axes": ()}], lr=lr)


OPTIMIZERS: dict[str, Callable[[Iterable[Tensor], float], Any]] = {
    "Adam": lambda p, lr: adamkit.Adam(p, lr=lr),
    "NAdam": lambda p, lr: adamkit.NAdam(p, lr=lr),
    "AMSGrad": lambda p, lr: adamkit.AMSGrad(p, lr=lr),
    "ND-Adam": nd_adam,
}
QUICK_GRID = [3e-3, 1e-2, 3e-2]
FULL_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
QUICK_EPOCHS, FULL_EPOCHS = 5, 40
SEEDS = 5
READING = {"lower": "better", "higher": "worse", "undecided": "undecided"}


# the numbers a claim compares or chooses an lr by, per seed (lower is better), and their names
METRICS: dict[str, Callable[[History], float]] = {
    "area": area,
    "final loss": lambda h: h["train_loss"][-1],
    "test error": lambda h: 100 * (1 - h["test_accuracy"][-1]),
}
NAMES = {
    "area": "mean training loss over the epochs",
    "final loss": "final training loss",
    "test error": "final test error (%)",
}
# variant -> (its paper's claim, the number compared, the number that chooses both arms' lr)
CLAIMS = {
    "NAdam": ("converges faster", "area", "area"),
    "AMSGrad": ("reaches a lower training loss", "final loss", "final loss"),
    "ND-Adam": ("generalises better", "test error", "final loss"),  # the test set never chooses
}
RULE = (
    f"{SEEDS} seeds, the same initial weights and mini-batches per seed for every optimizer "
    f"(quick: {QUICK_EPOCHS} epochs, lr grid 3e-3, 1e-2, 3e-2; full: {FULL_EPOCHS} epochs, "
    "3e-4 … 3e-2; each grid extended by its own ratio past an end of lowest mean final "
    "training loss, up to 3 times). Per claim, the variant and Adam each at its lr of lowest "
    "mean over the seeds of the number compared (exact ties to the middle of the tied range, "
    "an lr at the grid's end flagged): NAdam's mean training loss over the epochs (converges "
    "faster), AMSGrad's final training loss (lower training loss); ND-Adam's final test "
    "error in % (generalises better), both lrs chosen there by the final training loss (the "
    "test set never chooses). The paired differences variant − Adam over the seeds, mean and "
    "95 % Student-t interval: the papers claim 'better', so a claim holds when the whole "
    "interval is below 0 (superiority); wholly above 0 reads 'worse', an interval containing "
    "0 'undecided' (does not hold). Reproduced when all three hold, partly when one or two, "
    "not reproduced when none. ND-Adam keeps the hidden layers' weight vectors on the unit "
    "sphere; the output layer and the biases step as Adam (the MLP has no batch norm)."
)


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = QUICK_EPOCHS if settings.quick else FULL_EPOCHS
    seeds = [settings.seed + i for i in range(SEEDS)]
    grid = QUICK_GRID if settings.quick else FULL_GRID
    results: dict[str, Any] = {
        "dataset": dataset.name,
        "epochs": epochs,
        "seeds": seeds,
        "optimizers": {},
    }
    for name, make in OPTIMIZERS.items():

        def one(lr: float, seed: int, make=make) -> History:
            return train(models.mlp, dataset, make, lr, epochs, seed)

        found = grid_search(one, grid, seeds, settings.progress, name)
        results["optimizers"][name] = {
            "lr": found.lr,
            "curves": mean_history(found.kept),
            "train_loss_sd": spread(found.kept, "train_loss"),
            # per lr tried, each seed's value of every metric
            "per_lr": {
                f"{lr:.6g}": {key: [metric(h) for h in runs] for key, metric in METRICS.items()}
                for lr, runs in sorted(found.runs.items())
            },
        }
    return results


def chosen(result: dict[str, Any], key: str) -> tuple[float, bool, dict[str, list[float]]]:
    """An optimizer's lr of lowest mean ``key`` over the seeds (:func:`stats.best`), whether
    it is at an end of the grid searched, and each seed's metrics at that lr."""
    per_lr = {float(lr): values for lr, values in result["per_lr"].items()}
    kept = stats.best({lr: stats.mean_sd(values[key])[0] for lr, values in per_lr.items()})
    return kept.key, kept.at_edge, per_lr[kept.key]


def claims(numbers: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Per variant: whether its paper's advantage over Adam holds by the rule, and the
    lrs, the paired interval and its reading."""
    runs = numbers["optimizers"]
    found = {}
    for variant, (claim, compared, chooser) in CLAIMS.items():
        lrs, values = [], []
        for name in (variant, "Adam"):
            lr, at_edge, metrics = chosen(runs[name], chooser)
            lrs.append(f"{name} {lr:.3g}" + (" at the grid's end" if at_edge else ""))
            values.append(metrics[compared])
        interval = stats.paired(*values)
        found[variant] = (
            stats.lower(interval),
            f"{variant} {claim}? {NAMES[compared]} (lr {', '.join(lrs)}), {variant} − Adam "
            f"{interval.text()}: {READING[stats.decision(interval)]}",
        )
    return found


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = claims(numbers)
    words = "; ".join(text for _, text in found.values())
    return verdict_of([held for held, _ in found.values()]), (
        f"{numbers['dataset']} MLP, {numbers['epochs']} epochs, {len(numbers['seeds'])} "
        f"seeds: {words}."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, (loss_axis, accuracy_axis) = pyplot().subplots(1, 2, figsize=(13, 4.8))
    loss_axis.set_yscale("log")
    for name, result in numbers["optimizers"].items():
        curves = result["curves"]
        label = lr_label(name, result)
        plot_epochs(loss_axis, curves["train_loss"], result["train_loss_sd"], label=label)
        plot_epochs(accuracy_axis, [100 * a for a in curves["test_accuracy"]], label=label)
    loss_axis.set_ylabel("training loss (mean ± sd over seeds)")
    accuracy_axis.set_ylabel("test accuracy (%, mean over seeds)")
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    title = (
        f"Adam and its variants on {numbers['dataset']}'s MLP, each at its lr of lowest final "
        "training loss"
    )
    return [save(figure, folder, "variants.png", title)]


EXPERIMENT = Experiment(
    name="variants",
    claim="Adam's variants improve on it: NAdam converges faster, AMSGrad reaches a lower "
    "training loss, ND-Adam generalises better.",
    paper="Dozat (2016): NAdam converges faster than Adam on word2vec and an LSTM language "
    "model; Reddi et al. (ICLR 2018) §5: AMSGrad reaches lower training and test loss than "
    "Adam on MNIST logistic regression, an MLP and CIFARNET; Zhang et al. (2017): ND-Adam "
    "closes much of the generalisation gap between Adam and SGD on CIFAR-10/100 wide ResNets.",
    run=run,
    plot=plot,
    verdict=verdict,
    rule=RULE,
)
