"""Kingma & Ba (ICLR 2015) §6.4, Fig. 4: Adam with and without its bias correction (without
it, Adam is RMSprop with momentum) on a variational autoencoder.

Kingma & Welling's VAE (one softplus hidden layer in the encoder and in the decoder, a
spherical Gaussian latent, Bernoulli pixels), trained on the negative ELBO per image, one
sample of the latent per image. The paper's 500 hidden units and 50-d latent on MNIST's 784
pixels are 64 and 8 here, on digits' 64 pixels. The VAE needs images, with pixels in [0, 1]:
MNIST-1D is not an image set, so where it is asked for (the lab's default) this experiment
runs on digits and says so.

Every setting of β1 ∈ {0, 0.9}, β2 ∈ {0.99, 0.999, 0.9999}, the lr and the bias correction
starts, per seed, from the same initial weights and sees the same mini-batches (128) and the
same reparameterisation noise; the seeds of a setting train together, as one VAE whose linear
layers are :class:`Stacked`. Two marks: early, after 10 epochs (the paper's; digits has 11
mini-batches per epoch, so 1 − β2^t is then 0.67, 0.10 and 0.011 for the three β2), and late,
the first epoch at which 1 − β2^t ≥ 0.99 (:func:`late_epoch`), where the correction has all
but vanished: 42, 419 and 4 187 epochs of digits (on MNIST 10, 10 and 99, the paper's "100
epochs"). A quick run stops after :data:`QUICK_EPOCHS`; a late mark beyond that is not
reached, and its check not tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import compress
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import adamkit
from adamkit.lab import data, models, stats
from adamkit.lab.frame import Experiment, Settings, pyplot, save, verdict_of
from adamkit.lab.training import MakeOptimizer, initial_weights

BETA1S = (0.0, 0.9)
BETA2S = (0.99, 0.999, 0.9999)
QUICK_LRS = [1e-4, 1e-3, 1e-2, 1e-1]
FULL_LRS = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]  # the paper's grid, log10 α ∈ {−5, …, −1}
QUICK_SEEDS, FULL_SEEDS = 3, 5
BATCH_SIZE = 128
EARLY = 10  # epochs, the paper's "first few"
SETTLED = 0.99  # the late mark: the first epoch at which 1 − β2^t reaches this
QUICK_EPOCHS = 50  # a quick run trains at most this many epochs
MARGIN = 0.01  # "equal": within 1 % of the loss the VAE learned (the initial loss − the lowest)
HIDDEN, LATENT = 64, 8  # the paper's 500 and 50 on MNIST
UNSTABLE_AT, STABLE_AT = 0.9999, 0.99  # the β2 compared for instability

RULE = (
    f"Per seed ({QUICK_SEEDS} quick, {FULL_SEEDS} full), every cell (β1, β2, lr, with or "
    "without the correction) starts from the same weights and sees the same mini-batches and "
    "latent noise; the training loss (negative ELBO, nats) is compared. Unstable: per β1, more "
    f"lrs diverge (a non-finite loss in some seed) by epoch {EARLY} without the correction at "
    f"β2 {UNSTABLE_AT:g} than with it, and than without it at β2 {STABLE_AT:g}. Equal or "
    "better, per (β1, β2) and mark, at the same lr for both arms (so that the best lr of each "
    "cannot absorb the larger early steps of the uncorrected one): at every lr of the grid the "
    "paired 95 % Student-t interval over the seeds of the loss with the correction minus "
    f"without lies below a margin of {100 * MARGIN:g} % of the loss learned (the initial loss "
    "minus the lowest any cell reached); a run that diverged loses to one that did not, two that "
    f"diverged tie. Marks: epoch {EARLY} (early) and the first epoch at which 1 − β2^t ≥ "
    f"{SETTLED:g} (late: the correction has vanished); a late mark beyond the run (quick: "
    f"{QUICK_EPOCHS} epochs) is not tested. Reproduced when every tested check holds, partly "
    "when some do."
)


def vae(shape: models.Shape, classes: int) -> models.VAE:
    """:func:`adamkit.lab.models.vae` as the lab's model builder (a VAE has no classes)."""
    return models.vae(shape, HIDDEN, LATENT)


def initial_vae(dataset: data.Dataset, seed: int) -> models.VAE:
    """The VAE with the initial weights of ``seed`` (:func:`initial_weights`)."""
    model = vae(tuple(dataset.train_x.shape[1:]), dataset.classes)
    model.load_state_dict(initial_weights(vae, dataset, seed))
    return model


class Stacked(nn.Module):
    """The linear layers of several seeds' models as one: the input holds each seed's rows
    as consecutive blocks of equal size, and each block goes through its own seed's weight
    and bias in one batched product. Adam acts per element, so each seed trains as it would
    alone, at about the cost of one."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().T for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers])[:, None])

    def forward(self, x: Tensor) -> Tensor:
        blocks = x.reshape(len(self.weight), -1, x.shape[-1])
        return torch.baddbmm(self.bias, blocks, self.weight).flatten(0, 1)


def initial_vaes(dataset: data.Dataset, seeds: Sequence[int]) -> models.VAE:
    """One VAE holding the initial weights of every seed of ``seeds``, each linear layer a
    :class:`Stacked` of theirs: given the seeds' images (and latent noise) as consecutive
    blocks of equal size, it returns each image's negative ELBO under its own seed's VAE."""
    singles = [initial_vae(dataset, seed) for seed in seeds]
    model = singles[0]
    for name in ("encoder", "decoder"):
        layers = getattr(model, name)
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.Linear):
                layers[index] = Stacked([getattr(single, name)[index] for single in singles])
    return model


def per_seed(model: models.VAE, images: Tensor, noise: Tensor, seeds: int) -> Tensor:
    """The mean negative ELBO of each seed's block of ``images`` under :func:`initial_vaes`'
    ``model`` (a tensor of ``seeds`` values)."""
    return model(images, noise).view(seeds, -1).mean(1)


def initial_loss(dataset: data.Dataset, pixels: Tensor, seeds: Sequence[int]) -> list[float]:
    """Per seed, the mean negative ELBO of the training ``pixels`` at the initial weights,
    the latent noise drawn from the seed."""
    model = initial_vaes(dataset, seeds)
    noise = torch.cat(
        [
            torch.randn(len(pixels), model.latent, generator=torch.Generator().manual_seed(seed))
            for seed in seeds
        ]
    )
    with torch.no_grad():
        images = pixels.repeat(len(seeds), 1, 1, 1)
        return per_seed(model, images, noise, len(seeds)).tolist()


def train_vae(
    dataset: data.Dataset,
    pixels: Tensor,
    make: MakeOptimizer,
    lr: float,
    marks: dict[str, int],
    seeds: Sequence[int],
) -> dict[str, list[float]]:
    """Train :func:`initial_vaes` ``(seeds)`` on the training ``pixels`` with
    ``make(params, lr)``, each seed's mini-batches and latent noise drawn from a generator
    seeded with it. At each epoch of ``marks`` (name → epoch): per seed, the training loss
    (the mean of the epoch's mini-batch losses). A seed whose loss is not finite has
    diverged: its later marks are inf (the others train on, untouched by its NaNs)."""
    model = initial_vaes(dataset, seeds)
    optimizer = make(model.parameters(), lr)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    alive = torch.ones(len(seeds), dtype=torch.bool)
    found: dict[str, list[float]] = {}
    for epoch in range(1, max(marks.values()) + 1):
        orders = [data.batches(len(pixels), BATCH_SIZE, generator) for generator in generators]
        total = torch.zeros(len(seeds), dtype=torch.float64)
        for indices in zip(*orders, strict=True):
            optimizer.zero_grad()
            noise = torch.cat(
                [
                    torch.randn(len(index), model.latent, generator=generator)
                    for index, generator in zip(indices, generators, strict=True)
                ]
            )
            losses = per_seed(model, pixels[torch.cat(indices)], noise, len(seeds))
            losses.sum().backward()
            optimizer.step()
            total += losses.detach()
        alive &= torch.isfinite(total)
        for name in (name for name, mark in marks.items() if mark == epoch):
            found[name] = torch.where(alive, total / len(orders[0]), math.inf).tolist()
        if not alive.any():
            break
    return {name: found.get(name, [math.inf] * len(seeds)) for name in marks}


def adam(beta1: float, beta2: float, bias_correction: bool) -> MakeOptimizer:
    """``make(params, lr)`` for Adam with these betas, with or without bias correction (without
    it, RMSprop with momentum: Kingma & Ba §6.4)."""

    def make(params: Any, lr: float) -> adamkit.Adam:
        return adamkit.Adam(params, lr=lr, betas=(beta1, beta2), bias_correction=bias_correction)

    return make


def late_epoch(beta2: float, steps_per_epoch: int) -> int:
    """The first epoch, not before :data:`EARLY`, at whose end 1 − β2^t ≥ :data:`SETTLED`
    (t the steps taken)."""
    steps = math.ceil(math.log(1 - SETTLED) / math.log(beta2))
    return max(EARLY, -(-steps // steps_per_epoch))


def run(settings: Settings) -> dict[str, Any]:
    name = "digits" if settings.dataset == "mnist1d" else settings.dataset
    dataset = data.load(name, settings.data)
    pixels = dataset.pixels(dataset.train_x)
    steps_per_epoch = -(-len(pixels) // BATCH_SIZE)
    seeds = [settings.seed + i for i in range(QUICK_SEEDS if settings.quick else FULL_SEEDS)]
    lrs = QUICK_LRS if settings.quick else FULL_LRS
    grid = [
        (beta1, beta2, bias_correction, lr)
        for beta1 in BETA1S
        for beta2 in BETA2S
        for bias_correction in (True, False)
        for lr in lrs
    ]
    cells = []
    for beta1, beta2, bias_correction, lr in settings.progress(grid, "bias correction", len(grid)):
        late = late_epoch(beta2, steps_per_epoch)
        marks = {"early": EARLY}
        if not settings.quick or late <= QUICK_EPOCHS:
            marks["late"] = late
        make = adam(beta1, beta2, bias_correction)
        cells.append(
            {
                "beta1": beta1,
                "beta2": beta2,
                "bias_correction": bias_correction,
                "lr": lr,
                "epochs": {"early": EARLY, "late": late},
                "train_loss": train_vae(dataset, pixels, make, lr, marks, seeds),
            }
        )
    return {
        "dataset": dataset.name,
        "asked": settings.dataset,
        "steps_per_epoch": steps_per_epoch,
        "budget": QUICK_EPOCHS if settings.quick else None,
        "seeds": seeds,
        "lrs": lrs,
        "initial_loss": initial_loss(dataset, pixels, seeds),
        "cells": cells,
    }


def mean(values: Sequence[float]) -> float:
    """The mean over the seeds (inf where one diverged)."""
    return math.fsum(values) / len(values)


def setting(
    numbers: dict[str, Any], beta1: float, beta2: float, bias_correction: bool
) -> list[dict[str, Any]]:
    """The cells of one setting and arm, in the order of the lrs."""
    by_lr = {
        c["lr"]: c
        for c in numbers["cells"]
        if (c["beta1"], c["beta2"], c["bias_correction"]) == (beta1, beta2, bias_correction)
    }
    return [by_lr[lr] for lr in numbers["lrs"]]


def learned(numbers: dict[str, Any]) -> float:
    """The loss learned: the initial loss (mean over the seeds) minus the lowest mean loss
    of any cell at any mark. :data:`MARGIN` of it is the tolerance, which so scales with
    what the data leaves to learn, not with the loss's level (on CIFAR-10 mostly the
    pixels' entropy, where 1 % of the loss was ≈ 21 nats)."""
    lowest = min(mean(losses) for c in numbers["cells"] for losses in c["train_loss"].values())
    return mean(numbers["initial_loss"]) - lowest


def compare(with_: Sequence[float], without: Sequence[float], tolerance: float) -> str:
    """The loss with the correction against without, over paired seeds: "no worse",
    "worse" or "undecided". A run that diverged (inf) loses to one that did not, two that
    diverged tie; over the seeds where both are finite, the paired 95 % interval of
    with − without decides: no worse when it lies below ``tolerance``, worse when above it,
    undecided otherwise (always with one such seed: its interval is infinite)."""
    pairs = list(zip(with_, without, strict=True))
    if any(math.isinf(a) and not math.isinf(b) for a, b in pairs):
        return "worse"
    if any(math.isinf(b) and not math.isinf(a) for a, b in pairs):
        return "no worse"
    finite = [(a, b) for a, b in pairs if not math.isinf(a)]
    if not finite:
        return "no worse"
    interval = stats.paired(*zip(*finite, strict=True))
    if stats.no_worse(interval, tolerance):
        return "no worse"
    return "worse" if stats.decision(interval, tolerance) == "higher" else "undecided"


def diverged(numbers: dict[str, Any], beta1: float, beta2: float, correct: bool) -> int:
    """How many lrs diverged (in some seed) by the early mark."""
    cells = setting(numbers, beta1, beta2, correct)
    return sum(any(map(math.isinf, c["train_loss"]["early"])) for c in cells)


def claims(numbers: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    """The paper's findings as checks (:data:`RULE`): name → (held, or None where the mark
    was not reached; what was found)."""
    found: dict[str, tuple[bool | None, str]] = {}
    lrs = len(numbers["lrs"])
    for beta1 in BETA1S:
        without = diverged(numbers, beta1, UNSTABLE_AT, False)
        with_ = diverged(numbers, beta1, UNSTABLE_AT, True)
        low = diverged(numbers, beta1, STABLE_AT, False)
        found[f"unstable without the correction, β1 {beta1:g}"] = (
            without > with_ and without > low,
            f"{without} of {lrs} lrs diverged by epoch {EARLY} at β2 {UNSTABLE_AT:g}, {with_} "
            f"with it, {low} without it at β2 {STABLE_AT:g}",
        )
    tolerance = MARGIN * learned(numbers)
    for beta1 in BETA1S:
        for beta2 in BETA2S:
            pairs = list(
                zip(*(setting(numbers, beta1, beta2, c) for c in (True, False)), strict=True)
            )
            for mark in ("early", "late"):
                name = f"β1 {beta1:g}, β2 {beta2:g}, {mark} (epoch {pairs[0][0]['epochs'][mark]:,})"
                if mark not in pairs[0][0]["train_loss"]:
                    found[name] = (None, "not reached")
                    continue
                failed: dict[str, list[str]] = {"worse": [], "undecided": []}
                for a, b in pairs:
                    outcome = compare(a["train_loss"][mark], b["train_loss"][mark], tolerance)
                    failed.get(outcome, []).append(f"{a['lr']:g}")
                count = sum(map(len, failed.values()))
                found[name] = (
                    not count,
                    f"no worse at {lrs - count} of {lrs} lrs"
                    + "".join(f", {word} at {'/'.join(at)}" for word, at in failed.items() if at),
                )
    return found


def verdict(numbers: dict[str, Any]) -> tuple[str, str]:
    found = claims(numbers)
    words = {True: "holds", False: "does not hold", None: "not tested"}
    data_set = numbers["dataset"]
    if numbers["asked"] == "mnist1d":
        data_set += " (MNIST-1D, asked for, is not an image set; the VAE needs pixels in [0, 1])"
    scale = learned(numbers)
    return verdict_of([held for held, _ in found.values()]), (
        f"VAE with {HIDDEN} hidden units and {LATENT} latent dimensions (the paper's 500 and "
        f"50) on {data_set}, {len(numbers['seeds'])} seeds, lrs "
        f"{', '.join(f'{lr:g}' for lr in numbers['lrs'])}, training loss (negative ELBO); "
        f"equal or better judged at the same lr within {MARGIN * scale:.2g} nats "
        f"({100 * MARGIN:g} % of the {scale:.3g} learned). "
        + "; ".join(f"{name}: {words[held]} ({text})" for name, (held, text) in found.items())
        + "."
        + (
            f" The quick run stops at epoch {numbers['budget']}: the late marks after it "
            "are not tested."
            if any(held is None for held, _ in found.values())
            else ""
        )
    )


def plot(numbers: dict[str, Any], folder: Path) -> list[str]:
    """Fig. 4's layout: per β1 (rows) and mark (columns), the training loss (mean over the
    seeds) against log10(lr), a colour per β2, solid with bias correction and dashed
    without; a loss above the initial one, or a diverged run, is drawn as a cross at the
    top. The late column shows each β2 at its own late epoch, where reached."""
    plt = pyplot()
    figure, axes = plt.subplots(len(BETA1S), 2, figsize=(12, 8.5), squeeze=False)
    top = mean(numbers["initial_loss"])
    xs = [math.log10(lr) for lr in numbers["lrs"]]
    for row, beta1 in zip(axes, BETA1S, strict=True):
        for axis, mark in zip(row, ("early", "late"), strict=True):
            for index, beta2 in enumerate(BETA2S):
                for correct, style in ((True, "-"), (False, "--")):
                    cells = setting(numbers, beta1, beta2, correct)
                    if mark not in cells[0]["train_loss"]:
                        continue
                    values = [mean(c["train_loss"][mark]) for c in cells]
                    shown = [min(v, top) for v in values]
                    label = (
                        f"β2 {beta2:g} (epoch {cells[0]['epochs'][mark]:,}), "
                        f"{'with' if correct else 'without'} correction"
                    )
                    axis.plot(xs, shown, style, color=f"C{index}", label=label)
                    above = [v > top for v in values]
                    for marker, chosen in (("o", [not a for a in above]), ("x", above)):
                        axis.plot(
                            list(compress(xs, chosen)),
                            list(compress(shown, chosen)),
                            marker,
                            color=f"C{index}",
                            markersize=10 if marker == "x" else 6,
                        )
            axis.axhline(top, color="grey", lw=0.8, ls=":")
            when = f"epoch {EARLY}" if mark == "early" else f"1 − β2^t ≥ {SETTLED:g}"
            axis.set_title(f"β1 = {beta1:g}, {mark} ({when})")
            axis.set_xlabel("log10(lr)")
            axis.set_ylabel("training loss (negative ELBO)")
            if axis.lines:
                axis.legend(fontsize=7)
    title = (
        f"Kingma & Ba §6.4 on {numbers['dataset']}: VAE loss with (solid) and without (dashed) "
        "bias correction; × = diverged or above the initial loss (dotted)"
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
    rule=RULE,
)
