"""Adam and its variants on one task: Adamax (Kingma & Ba §7.1), NAdam (Dozat 2016), AMSGrad
(Reddi et al. 2018), ND-Adam (Zhang et al. 2017), each at its best lr on digits' MLP with the
lab's protocol (same start, same mini-batches; ND-Adam's hidden-unit vectors are scaled to
unit norm first, which its method requires).

Each variant's paper claims an advantage over Adam; the experiment checks one number per
claim: NAdam's mean training loss over the epochs (faster convergence), AMSGrad's final
training loss, ND-Adam's final test accuracy (better generalisation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, lr_label, plot_epochs, pyplot, save, verdict_of
from adamkit.lab.training import grid_search, train


def nd_adam(params: Any, lr: float) -> adamkit.NDAdam:
    params = list(params)
    adamkit.normalize_vectors_(params)
    return adamkit.NDAdam(params, lr=lr)


QUICK_GRID = [1e-3, 3e-3, 1e-2]
FULL_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
OPTIMIZERS = {
    "Adam": lambda p, lr: adamkit.Adam(p, lr=lr),
    "Adamax": lambda p, lr: adamkit.Adamax(p, lr=lr),
    "NAdam": lambda p, lr: adamkit.NAdam(p, lr=lr),
    "AMSGrad": lambda p, lr: adamkit.AMSGrad(p, lr=lr),
    "ND-Adam": nd_adam,
}


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    epochs = 15 if settings.quick else 40
    seeds = [settings.seed] if settings.quick else [settings.seed + i for i in range(3)]
    grid = QUICK_GRID if settings.quick else FULL_GRID
    results: dict[str, Any] = {"epochs": epochs, "seeds": seeds, "optimizers": {}}
    for name, make in OPTIMIZERS.items():

        def one(lr: float, seed: int, make=make) -> dict[str, list[float]]:
            return train(models.mlp, dataset, make, lr, epochs, seed)

        results["optimizers"][name] = grid_search(one, grid, seeds, settings.progress, name)
    return results


def claims(numbers: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Per variant: whether its paper's advantage over Adam shows, and the two numbers."""
    runs = numbers["optimizers"]
    adam = runs["Adam"]

    def final(name: str, key: str) -> float:
        return runs[name]["curves"][key][-1]

    nadam, area = runs["NAdam"]["area"], adam["area"]
    amsgrad, loss = final("AMSGrad", "train_loss"), final("Adam", "train_loss")
    ndadam, accuracy = final("ND-Adam", "test_accuracy"), final("Adam", "test_accuracy")
    return {
        "NAdam": (nadam <= area, f"NAdam mean training loss {nadam:.4f} vs Adam {area:.4f}"),
        "AMSGrad": (amsgrad <= loss, f"AMSGrad final loss {amsgrad:.4f} vs Adam {loss:.4f}"),
        "ND-Adam": (
            ndadam >= accuracy,
            f"ND-Adam test accuracy {100 * ndadam:.2f} % vs Adam {100 * accuracy:.2f} %",
        ),
    }


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = claims(numbers)
    holds = [held for held, _ in found.values()]
    outcome = verdict_of(holds)
    words = "; ".join(
        f"{text} ({'holds' if held else 'does not hold'})" for held, text in found.values()
    )
    lrs = ", ".join(f"{name} {r['lr']:.3g}" for name, r in numbers["optimizers"].items())
    return outcome, (
        f"Digits MLP, {numbers['epochs']} epochs, {len(numbers['seeds'])} seed(s), best lr "
        f"each ({lrs}): {words}."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    figure, (loss_axis, accuracy_axis) = pyplot().subplots(1, 2, figsize=(13, 4.8))
    loss_axis.set_yscale("log")
    for name, result in numbers["optimizers"].items():
        curves = result["curves"]
        plot_epochs(loss_axis, curves["train_loss"], label=lr_label(name, result))
        accuracy = [100 * a for a in curves["test_accuracy"]]
        plot_epochs(accuracy_axis, accuracy, label=lr_label(name, result))
    loss_axis.set_ylabel("training loss (cross-entropy)")
    accuracy_axis.set_ylabel("test accuracy (%)")
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("epoch")
        axis.legend(fontsize=8)
    title = "Adam and its variants on digits' MLP, each at its best lr"
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
)
