"""The bias-correction experiment (Kingma & Ba §6.4): the VAE's loss against a float64 hand
computation, the [0, 1] pixels it learns, the seeds trained together as each alone, the
verdict rule on constructed numbers (every outcome; per setting at the same lr, past the
early regime, a tolerance that scales with what is learned), the quick run read from its
numbers and through the real result.json writer and reader."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from adamkit.lab import data, experiment, models
from adamkit.lab.experiments import bias_correction
from adamkit.lab.frame import Settings, no_progress, read_result, run_experiment

BETA1S, BETA2S = bias_correction.BETA1S, bias_correction.BETA2S


def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(x))


def test_vae_loss_is_the_negative_elbo_computed_by_hand():
    """Kingma & Welling's bound with a Bernoulli decoder, written out in float64: the
    reconstruction −Σ [x log p + (1 − x) log(1 − p)] plus KL(N(μ, σ²) ‖ N(0, I)) =
    −½ Σ (1 + log σ² − μ² − σ²), z = μ + σ ε."""
    torch.manual_seed(0)
    model = models.vae((1, 8, 8), hidden=5, latent=3).double()
    images = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    noise = torch.randn(4, 3, dtype=torch.float64)
    weights = [layer for layer in (*model.encoder, *model.decoder) if hasattr(layer, "weight")]
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = ((m.weight, m.bias) for m in weights)
    x = images.reshape(4, 64)
    with torch.no_grad():
        encoded = softplus(x @ w1.T + b1) @ w2.T + b2
        mu, log_var = encoded[:, :3], encoded[:, 3:]
        z = mu + torch.exp(log_var / 2) * noise
        p = torch.sigmoid(softplus(z @ w3.T + b3) @ w4.T + b4)
        reconstruction = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)
        divergence = -0.5 * (1 + log_var - mu**2 - torch.exp(log_var)).sum(1)
        found = model(images, noise)
    torch.testing.assert_close(found, reconstruction + divergence, rtol=1e-10, atol=1e-10)


def test_pixels_undo_the_standardisation():
    """The VAE's targets: digits' train and test images back in [0, 1] (values / 16)."""
    bunch = load_digits()
    train, test = data.stratified_split(bunch.target, 0.25, 0)
    dataset = data.digits()
    for images, index in ((dataset.train_x, train), (dataset.test_x, test)):
        expected = bunch.images[index][:, None] / 16
        assert np.allclose(dataset.pixels(images).numpy(), expected, atol=1e-6)
        assert dataset.pixels(images).min() >= 0 and dataset.pixels(images).max() <= 1


def test_the_seeds_of_a_setting_train_together_as_each_would_alone():
    """The stacked VAE: its per-seed losses equal each seed's own VAE's, before and during
    training (same initial weights, mini-batches and noise per seed)."""
    dataset = data.digits()
    pixels = dataset.pixels(dataset.train_x)
    seeds = [0, 1, 2]
    stacked = bias_correction.initial_vaes(dataset, seeds)
    images, noise = pixels[:10], torch.randn(3 * 10, bias_correction.LATENT)
    with torch.no_grad():
        together = stacked(images.repeat(3, 1, 1, 1), noise).view(3, 10)
        for seed, row, part in zip(seeds, together, noise.split(10), strict=True):
            alone = bias_correction.initial_vae(dataset, seed)(images, part)
            torch.testing.assert_close(row, alone, rtol=1e-5, atol=1e-5)
    make = bias_correction.adam(0.9, 0.999, False)
    marks = {"first": 1, "second": 2}
    together = bias_correction.train_vae(dataset, pixels, make, 1e-2, marks, seeds)
    for index, seed in enumerate(seeds):
        alone = bias_correction.train_vae(dataset, pixels, make, 1e-2, marks, [seed])
        for mark in marks:
            assert together[mark][index] == pytest.approx(alone[mark][0], rel=1e-4)


def test_the_late_mark_is_past_the_early_regime():
    """Issue 18, finding 6: the late mark was 25 or 100 epochs of digits (275 or 1 100
    steps), where 1 − β2^t is still 0.03–0.10 for β2 0.9999; now it is the first epoch
    with 1 − β2^t ≥ 0.99."""
    for beta2, steps_per_epoch in ((0.99, 11), (0.999, 11), (0.9999, 11), (0.9999, 469)):
        epoch = bias_correction.late_epoch(beta2, steps_per_epoch)
        assert 1 - beta2 ** (epoch * steps_per_epoch) >= 0.99
        assert epoch == bias_correction.EARLY or 1 - beta2 ** ((epoch - 1) * steps_per_epoch) < 0.99
    assert bias_correction.late_epoch(0.99, 11) == 42
    assert bias_correction.late_epoch(0.9999, 469) == 99  # MNIST: the paper's 100 epochs


def test_a_cell_is_compared_by_the_stated_rule():
    """Paired over the seeds against the tolerance; a diverged run loses to a finite one;
    two diverged tie; one finite pair decides nothing."""
    compare = bias_correction.compare
    assert compare([1.0, 2.0, 3.0], [1.1, 2.05, 3.1], 0.1) == "no worse"
    assert compare([1.2, 2.2, 3.2], [1.0, 2.0, 3.0], 0.1) == "worse"
    assert compare([1.0, 2.0, 3.0], [1.0, 2.5, 2.5], 0.1) == "undecided"  # straddles
    assert compare([math.inf, 2.0, 3.0], [1.0, 9.0, 9.0], 0.1) == "worse"
    assert compare([1.0, 9.0, 9.0], [math.inf, 2.0, 3.0], 0.1) == "no worse"
    assert compare([math.inf] * 3, [math.inf] * 3, 0.1) == "no worse"
    assert compare([math.inf, math.inf, 1.0], [math.inf, math.inf, 2.0], 0.1) == "undecided"


LRS = [1e-4, 1e-3, 1e-2, 1e-1]


def constructed(loss, budget: int | None = None, offset: float = 0.0) -> dict:
    """The numbers of a run on 3 seeds in which the loss of a cell at a mark and seed is
    ``loss(beta1, beta2, correct, lr, seed)`` plus ``offset`` (the initial loss is 47 plus
    ``offset``); late marks after ``budget`` are not reached."""
    cells = []
    for beta1 in BETA1S:
        for beta2 in BETA2S:
            late = bias_correction.late_epoch(beta2, 11)
            marks = ["early"] + (["late"] if budget is None or late <= budget else [])
            for correct in (True, False):
                for lr in LRS:
                    values = [offset + loss(beta1, beta2, correct, lr, seed) for seed in range(3)]
                    cells.append(
                        {
                            "beta1": beta1,
                            "beta2": beta2,
                            "bias_correction": correct,
                            "lr": lr,
                            "epochs": {"early": bias_correction.EARLY, "late": late},
                            "train_loss": {mark: values for mark in marks},
                        }
                    )
    return {
        "dataset": "digits",
        "asked": "digits",
        "steps_per_epoch": 11,
        "budget": budget,
        "seeds": [0, 1, 2],
        "lrs": LRS,
        "initial_loss": [47.0 + offset] * 3,
        "cells": cells,
    }


def shape(unstable: bool, gap: float):
    """A loss: 30 nats plus a little per seed, ``gap`` more with the correction than without,
    and without it diverged at β2 0.9999 and lrs ≥ 1e-2 where ``unstable``."""

    def loss(beta1, beta2, correct, lr, seed):
        if unstable and not correct and beta2 == 0.9999 and lr >= 1e-2:
            return math.inf
        return 30.0 + 0.01 * seed + (gap + 0.001 * seed if correct else 0.0)

    return loss


def test_the_verdict_reaches_every_outcome():
    verdict = bias_correction.verdict
    assert verdict(constructed(shape(True, -1.0)))[0] == "reproduced"
    assert verdict(constructed(shape(True, 2.0)))[0] == "partly"
    assert verdict(constructed(shape(False, 2.0)))[0] == "not reproduced"
    # late marks past the budget are not tested; the rest decides
    outcome, sentence = verdict(constructed(shape(True, -1.0), budget=50))
    assert outcome == "reproduced" and "late (epoch 4,187): not tested (not reached)" in sentence
    assert "stops at epoch 50" in sentence


def test_each_setting_is_judged_at_the_same_lr():
    """Issue 18, finding 6: the best over the lrs per (β1, β2) absorbed the ≈10× larger
    early steps without the correction. Here the uncorrected run at lr is the corrected one
    at 10·lr (the rescale): the best of each arm is the same, yet at the same lr the
    correction is behind at the three smaller lrs, so equal-or-better does not hold in any
    setting."""

    def loss(beta1, beta2, correct, lr, seed):
        effective = lr if correct else min(10 * lr, 1e-1)
        return 30.0 + 5 * abs(math.log10(effective) + 1) + 0.01 * seed

    numbers = constructed(loss)
    for beta1 in BETA1S:
        for beta2 in BETA2S:
            best = [
                min(bias_correction.mean(c["train_loss"]["early"]) for c in cells)
                for cells in (
                    bias_correction.setting(numbers, beta1, beta2, c) for c in (True, False)
                )
            ]
            assert best[0] == best[1]  # the best over the lrs: equal
    found = bias_correction.claims(numbers)
    judged = {name: held for name, (held, _) in found.items() if not name.startswith("unstable")}
    assert len(judged) == 12 and not any(judged.values())
    assert (
        "no worse at 1 of 4 lrs, worse at 0.0001/0.001/0.01"
        in found["β1 0, β2 0.99, early (epoch 10)"][1]
    )


def test_the_tolerance_scales_with_what_is_learned_not_with_the_loss_level():
    """Issue 18, finding 6: on CIFAR-10 1 % of the loss (≈ 21 nats, mostly the pixels'
    entropy) let everything pass. A constant added to every loss (and the initial one)
    changes nothing now."""
    for loss in (shape(True, -1.0), shape(True, 2.0), shape(True, 0.1), shape(True, 0.3)):
        plain = bias_correction.verdict(constructed(loss))
        shifted = bias_correction.verdict(constructed(loss, offset=2000.0))
        assert plain[0] == shifted[0]
    # the learned 17 nats: a margin of 0.17, so 0.1 worse passes and 0.3 worse fails
    assert bias_correction.verdict(constructed(shape(True, 0.1)))[0] == "reproduced"
    assert bias_correction.verdict(constructed(shape(True, 0.3)))[0] == "partly"


@pytest.fixture(scope="module")
def numbers():
    return experiment("bias-correction").run(Settings("quick", 0, no_progress))


def test_mnist1d_is_not_an_image_set_so_digits_is_used(numbers):
    """Issue 18, finding 6: MNIST-1D (the default data set) is a sequence set; the VAE needs
    pixels in [0, 1], so the experiment runs on digits and says so."""
    assert numbers["dataset"] == "digits" and numbers["asked"] == "mnist1d"
    assert numbers["steps_per_epoch"] == 11
    assert "MNIST-1D, asked for, is not an image set" in bias_correction.verdict(numbers)[1]


def test_the_vae_learns(numbers):
    """At its best setting the loss ends far below the initial weights' (for digits:
    about 47 nats at the start, about 25 at the end)."""
    best = min(bias_correction.mean(v) for c in numbers["cells"] for v in c["train_loss"].values())
    assert best < 0.6 * bias_correction.mean(numbers["initial_loss"])
    assert len(numbers["cells"]) == 2 * 3 * 2 * len(numbers["lrs"])
    assert len(numbers["seeds"]) == bias_correction.QUICK_SEEDS
    for cell in numbers["cells"]:  # a diverged seed stops: its later marks are inf too
        losses = cell["train_loss"]
        for seed, early in enumerate(losses["early"]):
            if math.isinf(early) and "late" in losses:
                assert math.isinf(losses["late"][seed])


def test_the_quick_run_reaches_the_late_regime_where_its_budget_allows(numbers):
    """β2 0.99 reaches 1 − β2^t ≥ 0.99 at epoch 42 of the quick run's 50; 0.999 and 0.9999
    do not, and their late checks are not tested."""
    found = bias_correction.claims(numbers)
    for cell in numbers["cells"]:
        steps = cell["epochs"]["late"] * numbers["steps_per_epoch"]
        assert 1 - cell["beta2"] ** steps >= bias_correction.SETTLED
        assert ("late" in cell["train_loss"]) == (cell["beta2"] == 0.99)
    for beta1 in BETA1S:
        assert found[f"β1 {beta1:g}, β2 0.99, late (epoch 42)"][0] is not None
        assert found[f"β1 {beta1:g}, β2 0.9999, late (epoch 4,187)"][0] is None


def test_without_correction_beta2_near_one_is_unstable(numbers):
    """The paper's instability: without bias correction more lrs diverge at β2 = 0.9999 than
    at 0.99; with it, no run diverges."""
    for beta1 in BETA1S:
        without = bias_correction.diverged(numbers, beta1, 0.9999, False)
        assert without > bias_correction.diverged(numbers, beta1, 0.99, False)
        assert all(bias_correction.diverged(numbers, beta1, b2, True) == 0 for b2 in BETA2S)


def test_without_correction_small_lrs_move_faster_early(numbers):
    """What the same-lr comparison shows: at the smallest lr and β2 = 0.9999 the run without
    correction is ahead after the early epochs (its steps are larger by about
    1/√(1 − β2^t), as if its lr were larger), so equal-or-better fails there."""
    for beta1 in BETA1S:
        with_, without = (
            bias_correction.setting(numbers, beta1, 0.9999, correct)[0]["train_loss"]["early"]
            for correct in (True, False)
        )
        assert all(b < a for a, b in zip(with_, without, strict=True)), (beta1, with_, without)
        assert (
            bias_correction.claims(numbers)[f"β1 {beta1:g}, β2 0.9999, early (epoch 10)"][0]
            is False
        )


def test_the_verdict_read_back_from_result_json_is_the_runs(numbers, tmp_path):
    """Issue 18, finding 6: a diverged run's inf was written as "inf" and a verdict
    recomputed from result.json raised TypeError. Through the real writer and reader
    (run_experiment, read_result) the verdict is the run's."""
    assert any(math.isinf(v) for c in numbers["cells"] for v in c["train_loss"]["early"])
    saved = copy.deepcopy(numbers)
    fake = dataclasses.replace(experiment("bias-correction"), run=lambda settings: saved)
    written = run_experiment(fake, Settings("quick", 0, no_progress), tmp_path)
    record = read_result(tmp_path / "bias-correction")
    assert bias_correction.verdict(record["numbers"]) == (written["verdict"], written["summary"])
    assert record["rule"] == bias_correction.RULE
    assert all(
        (tmp_path / "bias-correction" / name).stat().st_size > 10_000 for name in record["plots"]
    )


def test_a_full_run_reaches_every_late_mark(monkeypatch):
    """The full run's path, shrunk (one lr, two seeds, late marks at epoch 11): no budget,
    every late mark reached and judged, on digits when asked for it."""
    monkeypatch.setattr(bias_correction, "FULL_LRS", [1e-2])
    monkeypatch.setattr(bias_correction, "FULL_SEEDS", 2)
    monkeypatch.setattr(bias_correction, "late_epoch", lambda beta2, steps: 11)
    numbers = bias_correction.run(Settings("full", 0, no_progress, dataset="digits"))
    assert numbers["budget"] is None and numbers["seeds"] == [0, 1]
    assert (numbers["dataset"], numbers["asked"]) == ("digits", "digits")
    assert all(set(c["train_loss"]) == {"early", "late"} for c in numbers["cells"])
    found = bias_correction.claims(numbers)
    assert all(held is not None for held, _ in found.values())
    assert "MNIST-1D" not in bias_correction.verdict(numbers)[1]
