"""Kingma & Ba (ICLR 2015) §6.4, Fig. 4: Adam with and without its bias correction (without
it, Adam is RMSprop with momentum) on a variational autoencoder.

Kingma & Welling's VAE (one softplus hidden layer in the encoder and in the decoder, a
spherical Gaussian latent, Bernoulli pixels; the paper's 500 hidden units and 50-d latent on
MNIST become 64 and 8 on digits' 64 pixels), trained on the negative ELBO per image, one
sample of the latent per image. Every setting of β1 ∈ {0, 0.9}, β2 ∈ {0.99, 0.999, 0.9999},
the lr and the bias correction starts from the same initial weights and sees the same
mini-batches (128) and the same reparameterisation noise. The paper reports the loss after
10 and 100 epochs of MNIST (4 690 and 46 900 steps); digits has 11 mini-batches per epoch,
so after 10 epochs (110 steps) 1 − β2^t is still 0.67, 0.10 and 0.011 for the three β2,
which is where the correction matters.
"""

from __future__ import annotations

import math
from itertools import compress
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of
from adamkit.lab.training import MakeOptimizer, initial_weights

BETA1S = (0.0, 0.9)
BETA2S = (0.99, 0.999, 0.9999)
QUICK_LRS = [1e-4, 1e-3, 1e-2, 1e-1]
FULL_LRS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]  # the paper's grid, log10 α ∈ {−5, …, −1}
BATCH_SIZE = 128
EARLY = 10  # epochs, the paper's "first few"; late: 25 quick, 100 full (the paper's)
TOLERANCE = 0.01  # "equal": within 1 % of the loss


def vae(shape: models.Shape, classes: int) -> models.VAE:
    """:func:`adamkit.lab.models.vae` as the lab's model builder (a VAE has no classes)."""
    return models.vae(shape)


def initial_vae(dataset: data.Dataset, seed: int) -> models.VAE:
    """The VAE with the initial weights of ``seed`` (:func:`initial_weights`)."""
    model = vae(tuple(dataset.train_x.shape[1:]), dataset.classes)
    model.load_state_dict(initial_weights(vae, dataset, seed))
    return model


def negative_elbo(model: models.VAE, images: Tensor, seed: int) -> float:
    """The mean negative ELBO of ``images``, with the latent noise drawn from ``seed`` (the
    same for every setting)."""
    noise = torch.randn(len(images), model.latent, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(images, noise).mean().item()


def train_vae(
    dataset: data.Dataset,
    pixels: tuple[Tensor, Tensor],
    make: MakeOptimizer,
    lr: float,
    marks: dict[str, int],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Train :func:`initial_vae` ``(seed)`` on the train ``pixels`` with
    ``make(params, lr)``; the mini-batches and the noise come from one generator seeded with
    ``seed``. At each epoch of ``marks`` (name → epoch): the training loss (the mean of the
    epoch's mini-batch losses) and the test split's (the second of ``pixels``). A run whose
    loss is not finite stops there, its later marks recorded as inf."""
    train_x, test_x = pixels
    model = initial_vae(dataset, seed)
    optimizer = make(model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    found: dict[str, dict[str, float]] = {"train_loss": {}, "test_loss": {}}
    for epoch in range(1, max(marks.values()) + 1):
        losses = []
        for index in data.batches(len(train_x), BATCH_SIZE, generator):
            optimizer.zero_grad()
            noise = torch.randn(len(index), model.latent, generator=generator)
            loss = model(train_x[index], noise).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean = math.fsum(losses) / len(losses)
        if not math.isfinite(mean):
            break
        for name in (name for name, mark in marks.items() if mark == epoch):
            found["train_loss"][name] = mean
            found["test_loss"][name] = negative_elbo(model, test_x, seed)
    for values in found.values():
        for name in marks:
            values.setdefault(name, math.inf)
    return found


def adam(beta1: float, beta2: float, bias_correction: bool) -> MakeOptimizer:
    """``make(params, lr)`` for Adam with these betas, with or without bias correction (without
    it, RMSprop with momentum: Kingma & Ba §6.4)."""

    def make(params: Any, lr: float) -> adamkit.Adam:
        return adamkit.Adam(params, lr=lr, betas=(beta1, beta2), bias_correction=bias_correction)

    return make


def run(settings: Settings) -> dict[str, Any]:
    dataset = data.load(settings.dataset, settings.data)
    pixels = dataset.pixels(dataset.train_x), dataset.pixels(dataset.test_x)
    marks = {"early": EARLY, "late": 25 if settings.quick else 100}
    seeds = [settings.seed] if settings.quick else [settings.seed + i for i in range(3)]
    lrs = QUICK_LRS if settings.quick else FULL_LRS
    grid = [
        (beta1, beta2, bias_correction, lr)
        for beta1 in BETA1S
        for beta2 in BETA2S
        for bias_correction in (True, False)
        for lr in lrs
    ]
    runs = [(cell, seed) for cell in grid for seed in seeds]
    found: dict[tuple[float, float, bool, float], list[dict[str, dict[str, float]]]] = {}
    for cell, seed in settings.progress(runs, "bias correction", len(runs)):
        beta1, beta2, bias_correction, lr = cell
        make = adam(beta1, beta2, bias_correction)
        found.setdefault(cell, []).append(train_vae(dataset, pixels, make, lr, marks, seed))

    def mean(values: list[float]) -> float:
        return math.fsum(values) / len(values)  # inf when a seed diverged

    cells = [
        {
            "beta1": beta1,
            "beta2": beta2,
            "bias_correction": bias_correction,
            "lr": lr,
            **{
                key: {name: mean([r[key][name] for r in results]) for name in marks}
                for key in ("train_loss", "test_loss")
            },
        }
        for (beta1, beta2, bias_correction, lr), results in found.items()
    ]
    start = [negative_elbo(initial_vae(dataset, seed), pixels[0], seed) for seed in seeds]
    return {
        "epochs": marks,
        "seeds": seeds,
        "lrs": lrs,
        "initial_loss": mean(start),
        "cells": cells,
    }


def losses(
    numbers: dict[str, Any], beta1: float, beta2: float, bias_correction: bool, mark: str
) -> list[float]:
    """The training loss at ``mark`` ("early" or "late") per lr of the grid."""
    by_lr = {
        c["lr"]: c["train_loss"][mark]
        for c in numbers["cells"]
        if (c["beta1"], c["beta2"], c["bias_correction"]) == (beta1, beta2, bias_correction)
    }
    return [by_lr[lr] for lr in numbers["lrs"]]


def ratio(corrected: float, uncorrected: float) -> float:
    """``corrected / uncorrected``, 1 where both diverged (inf)."""
    return 1.0 if corrected == uncorrected else corrected / uncorrected


def claims(numbers: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """The paper's two findings as checks on the training loss.

    Unstable without correction: per β1, more lrs diverge (a non-finite loss) by the early
    mark without bias correction at β2 = 0.9999 than with it, and than without it at
    β2 = 0.99. Equal or better: per mark, for every (β1, β2) the best loss over the lrs
    with bias correction is at most (1 + TOLERANCE) times the best without."""
    early, found = numbers["epochs"]["early"], {}
    for beta1 in BETA1S:

        def diverged(beta2: float, correct: bool, beta1: float = beta1) -> int:
            return sum(math.isinf(v) for v in losses(numbers, beta1, beta2, correct, "early"))

        without, with_, low = diverged(0.9999, False), diverged(0.9999, True), diverged(0.99, False)
        found[f"unstable (β1 {beta1:g})"] = (
            without > with_ and without > low,
            f"β1 {beta1:g}: of {len(numbers['lrs'])} lrs, {without} diverged by epoch {early} "
            f"without bias correction at β2 0.9999 ({with_} with it, {low} without at β2 0.99)",
        )
    for mark, epoch in numbers["epochs"].items():
        ratios = {
            (beta1, beta2): ratio(
                min(losses(numbers, beta1, beta2, True, mark)),
                min(losses(numbers, beta1, beta2, False, mark)),
            )
            for beta1 in BETA1S
            for beta2 in BETA2S
        }
        worst = max(ratios, key=ratios.__getitem__)
        held = sum(ratio <= 1 + TOLERANCE for ratio in ratios.values())
        found[f"equal or better ({mark})"] = (
            held == len(ratios),
            f"after {epoch} epochs the best loss with bias correction is within "
            f"{100 * TOLERANCE:g} % of the best without, or below it, for {held} of "
            f"{len(ratios)} (β1, β2) (largest ratio {ratios[worst]:.3f} at β1 {worst[0]:g}, "
            f"β2 {worst[1]:g})",
        )
    return found


def cells_no_worse(numbers: dict[str, Any], mark: str) -> float:
    """The fraction of (β1, β2, lr) where the loss with bias correction is at most
    (1 + TOLERANCE) times the loss without (two diverged runs count as equal)."""
    pairs = [
        (a, b)
        for beta1 in BETA1S
        for beta2 in BETA2S
        for a, b in zip(
            losses(numbers, beta1, beta2, True, mark),
            losses(numbers, beta1, beta2, False, mark),
            strict=True,
        )
    ]
    return sum(ratio(a, b) <= 1 + TOLERANCE for a, b in pairs) / len(pairs)


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = claims(numbers)
    holds = [held for held, _ in found.values()]
    outcome = verdict_of(holds)
    gaps = ", ".join(
        f"β1 {beta1:g} {min(losses(numbers, beta1, 0.9999, False, 'early')):.2f} without vs "
        f"{min(losses(numbers, beta1, 0.9999, True, 'early')):.2f} with"
        for beta1 in BETA1S
    )
    fractions = ", ".join(
        f"{100 * cells_no_worse(numbers, mark):.0f} % after {epoch} epochs"
        for mark, epoch in numbers["epochs"].items()
    )
    return outcome, (
        f"VAE on {len(numbers['lrs'])} lrs, {len(numbers['seeds'])} seed(s), training loss "
        "(negative ELBO, nats): "
        + "; ".join(
            f"{text} ({'holds' if held else 'does not hold'})" for held, text in found.values()
        )
        + f". Best loss at β2 0.9999 after {numbers['epochs']['early']} epochs: {gaps}. "
        f"Bias correction no worse than without (1 % tolerance) in {fractions} of the "
        "(β1, β2, lr) cells."
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    """Fig. 4's layout: per β1 (rows) and mark (columns), the training loss against
    log10(lr), a colour per β2, solid with bias correction and dashed without; a loss above
    the initial one, or a diverged run, is drawn as a cross at the top."""
    plt = pyplot()
    marks = numbers["epochs"]
    figure, axes = plt.subplots(len(BETA1S), len(marks), figsize=(12, 8.5), squeeze=False)
    top = numbers["initial_loss"]
    xs = [math.log10(lr) for lr in numbers["lrs"]]
    for row, beta1 in zip(axes, BETA1S, strict=True):
        for axis, (mark, epoch) in zip(row, marks.items(), strict=True):
            for index, beta2 in enumerate(BETA2S):
                for correct, style in ((True, "-"), (False, "--")):
                    values = losses(numbers, beta1, beta2, correct, mark)
                    label = f"β2 {beta2:g}, {'with' if correct else 'without'} correction"
                    color = f"C{index}"
                    shown = [min(v, top) for v in values]
                    axis.plot(xs, shown, style, color=color, label=label)
                    above = [v > top for v in values]
                    for marker, chosen in (("o", [not a for a in above]), ("x", above)):
                        axis.plot(
                            list(compress(xs, chosen)),
                            list(compress(shown, chosen)),
                            marker,
                            color=color,
                            markersize=10 if marker == "x" else 6,
                        )
            axis.axhline(top, color="grey", lw=0.8, ls=":")
            axis.set_title(f"β1 = {beta1:g}, after {epoch} epochs")
            axis.set_xlabel("log10(lr)")
            axis.set_ylabel("training loss (negative ELBO)")
    axes[0][0].legend(fontsize=8)
    title = (
        "Kingma & Ba §6.4 on digits: VAE loss with (solid) and without (dashed) bias "
        "correction; × = diverged or above the initial loss (dotted)"
    )
    return [save(figure, folder, "bias_correction.png", title)]


EXPERIMENT = Experiment(
    name="bias-correction",
    claim="Without bias correction (RMSprop with momentum), β2 close to 1 makes training "
    "unstable, especially early; with it, Adam does as well as or better than without, "
    "whatever β1, β2 and the lr.",
    paper="Kingma & Ba (ICLR 2015) §6.4, Fig. 4: a VAE (500 softplus hidden units, 50-d "
    "latent) on MNIST, β1 ∈ {0, 0.9}, β2 ∈ {0.99, 0.999, 0.9999}, log10 α ∈ {−5, …, −1}, "
    "loss after 10 and 100 epochs: β2 close to 1 without bias correction led to "
    "instabilities, especially in the first epochs; the best results came with small 1 − β2 "
    "and bias correction; Adam performed equal or better than RMSProp, regardless of the "
    "hyper-parameter setting.",
    run=run,
    plot=plot,
    verdict=verdict,
)
