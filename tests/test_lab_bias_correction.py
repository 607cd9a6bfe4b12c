"""The bias-correction experiment (Kingma & Ba §6.4): the VAE's loss against a float64 hand
computation, the [0, 1] pixels it learns, and the quick run read from its numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from adamkit.lab import data, experiment, models
from adamkit.lab.experiments import bias_correction
from adamkit.lab.frame import Settings, no_progress


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


@pytest.fixture(scope="module")
def numbers():
    return experiment("bias-correction").run(Settings("quick", 0, no_progress))


def ratio(numbers, beta1: float, beta2: float, mark: str) -> float:
    """The best-over-lr loss with bias correction over the best without."""
    with_, without = (
        min(bias_correction.losses(numbers, beta1, beta2, correct, mark))
        for correct in (True, False)
    )
    return with_ / without


def test_the_vae_learns(numbers):
    """At its best setting the loss ends far below the initial weights' (for digits:
    about 47 nats at the start, about 25 at the end)."""
    best = min(c["train_loss"]["late"] for c in numbers["cells"])
    assert best < 0.6 * numbers["initial_loss"]
    assert len(numbers["cells"]) == 2 * 3 * 2 * len(numbers["lrs"])
    for cell in numbers["cells"]:  # a diverged run stops: its later marks are inf too
        if math.isinf(cell["train_loss"]["early"]):
            assert math.isinf(cell["train_loss"]["late"]) and math.isinf(cell["test_loss"]["late"])


def test_without_correction_beta2_near_one_is_unstable(numbers):
    """The paper's instability: without bias correction more lrs diverge at β2 = 0.9999 than
    at 0.99; with it, no run diverges."""
    for beta1 in bias_correction.BETA1S:
        counts = {
            (beta2, correct): sum(
                map(math.isinf, bias_correction.losses(numbers, beta1, beta2, correct, "early"))
            )
            for beta2 in bias_correction.BETA2S
            for correct in (True, False)
        }
        assert counts[0.9999, False] > counts[0.99, False], (beta1, counts)
        assert all(counts[beta2, True] == 0 for beta2 in bias_correction.BETA2S), counts


def test_with_correction_the_best_is_at_least_as_good_late(numbers):
    """Equal or better after the last epoch, for every (β1, β2), at the best lr of each."""
    for beta1 in bias_correction.BETA1S:
        for beta2 in bias_correction.BETA2S:
            assert ratio(numbers, beta1, beta2, "late") <= 1 + bias_correction.TOLERANCE


def test_without_correction_small_lrs_move_faster_early(numbers):
    """What digits shows beyond the paper: at the smallest lr and β2 = 0.9999 the run
    without correction is ahead after the early epochs (its steps are larger by about
    1/√(1 − β2^t), as if its lr were larger), so bias correction is not better in every
    (β1, β2, lr) cell."""
    small = 0  # index of the smallest lr
    for beta1 in bias_correction.BETA1S:
        without = bias_correction.losses(numbers, beta1, 0.9999, False, "early")[small]
        with_ = bias_correction.losses(numbers, beta1, 0.9999, True, "early")[small]
        assert without < with_, (beta1, without, with_)
    assert bias_correction.cells_no_worse(numbers, "early") < 1


def test_verdict_follows_the_numbers(numbers, tmp_path):
    found = bias_correction.claims(numbers)
    holds = [held for held, _ in found.values()]
    outcome, sentence = bias_correction.verdict(numbers)
    assert outcome == ("reproduced" if all(holds) else "partly" if any(holds) else "not reproduced")
    assert all(text in sentence for _, text in found.values())
    for mark in ("early", "late"):
        ratios = [ratio(numbers, b1, b2, mark) for b1 in (0.0, 0.9) for b2 in (0.99, 0.999, 0.9999)]
        assert found[f"equal or better ({mark})"][0] == (max(ratios) <= 1.01)

    def rewrite(factor: float, diverge: bool) -> dict:
        """Every run without correction set to ``factor`` times the same run with it, and
        at β2 = 0.9999 diverged where ``diverge``."""
        changed = json.loads(json.dumps(numbers))
        same = {
            (c["beta1"], c["beta2"], c["lr"]): c for c in changed["cells"] if c["bias_correction"]
        }
        for cell in changed["cells"]:
            if not cell["bias_correction"]:
                twin = same[cell["beta1"], cell["beta2"], cell["lr"]]["train_loss"]
                unstable = diverge and cell["beta2"] == 0.9999
                cell["train_loss"] = {
                    mark: math.inf if unstable else factor * value for mark, value in twin.items()
                }
        return changed

    assert bias_correction.verdict(rewrite(1.1, True))[0] == "reproduced"
    assert bias_correction.verdict(rewrite(0.9, False))[0] == "not reproduced"
    assert bias_correction.verdict(rewrite(0.9, True))[0] == "partly"
    names = bias_correction.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
