"""The kingma-ba experiment: the lr chosen and scored by one criterion (the area under the
training-loss curve), Adam against the best other optimizer by a paired interval with a
non-inferiority margin, every outcome of the verdict on constructed numbers, and the quick
run read from its numbers."""

from __future__ import annotations

import math

import pytest

from adamkit.lab import experiment, stats
from adamkit.lab.experiments import kingma_ba
from adamkit.lab.frame import Settings, no_progress, verdict_of


def result(areas: list[float], lr: float = 0.01) -> dict:
    """One optimizer's record as ``search`` writes it (the curves left out)."""
    return {"lr": lr, "at_edge": False, "areas": areas, "area": stats.mean_sd(areas)[0]}


def constructed(adam: dict[str, list[float]], other: dict[str, list[float]]) -> dict:
    """Numbers with Adam's per-seed areas per model, the best other optimizer's (SGD
    Nesterov) and a slower third (AdaGrad, 1.5 times SGD's)."""
    return {
        "epochs": 5,
        "seeds": list(range(len(next(iter(adam.values()))))),
        "margin": 0.10,  # the rule's: Adam at most 10 % slower
        "models": {
            model: {
                "SGD Nesterov": result(other[model], 0.1),
                "AdaGrad": result([1.5 * a for a in other[model]], 0.03),
                "Adam": result(adam[model], 0.003),
            }
            for model in adam
        },
    }


BASE = [1.00, 1.10, 0.95, 1.05, 1.02]
FASTER = [0.80, 0.89, 0.76, 0.85, 0.81]
SLOWER = [1.40, 1.52, 1.35, 1.49, 1.41]


@pytest.mark.parametrize(
    "adam, expected",
    [
        ({"LR": FASTER, "MLP": BASE}, "reproduced"),  # faster; the same (inside the margin)
        ({"LR": FASTER, "MLP": SLOWER}, "partly"),
        ({"LR": SLOWER, "MLP": SLOWER}, "not reproduced"),
    ],
)
def test_the_verdict_reaches_every_outcome(adam, expected):
    numbers = constructed(adam, {"LR": BASE, "MLP": BASE})
    outcome, sentence = kingma_ba.verdict(numbers)
    assert outcome == expected
    assert "LR: Adam" in sentence and "SGD Nesterov" in sentence
    decisions = {m: kingma_ba.comparison(numbers, m)["decision"] for m in adam}
    assert set(decisions.values()) <= {"no worse", "slower"}
    assert ("slower" in decisions.values()) is (expected != "reproduced")


def test_finding_9_adam_as_fast_on_average_but_undecided_over_the_seeds_does_not_hold():
    """Issue 18, finding 9: Adam's mean area within 10 % of the best other's was enough
    before; the claim "as fast as" is now decided by the paired interval over the seeds
    against the 10 % margin, and seeds that disagree decide nothing."""
    noisy = [0.80, 1.30, 0.90, 1.25, 0.85]  # mean 1.02: within 10 % of BASE's 1.024
    numbers = constructed({"MLP": noisy}, {"MLP": BASE})
    assert kingma_ba.verdict(numbers)[0] == "not reproduced"
    compared = kingma_ba.comparison(numbers, "MLP")
    assert compared["other"] == "SGD Nesterov" and compared["decision"] == "undecided"
    assert compared["interval"].high > math.log(1 + kingma_ba.MARGIN) > compared["interval"].mean
    one_seed = constructed({"MLP": [0.5]}, {"MLP": [1.0]})  # no interval: decides nothing
    outcome, sentence = kingma_ba.verdict(one_seed)
    assert outcome == "not reproduced" and "decides nothing" in sentence


def fake_train(build, dataset, make, lr, epochs, seed):
    """Constructed training curves: at the middle lr of the optimizer's quick grid the loss
    falls fast and stays at 0.5 (the lowest area), above it it falls slowly to the lowest
    final loss 0.2, below it it stays at 2."""
    name = next(n for n, (m, _) in kingma_ba.OPTIMIZERS.items() if m is make)
    middle = sorted(kingma_ba.OPTIMIZERS[name][1][0])[1]
    if math.isclose(lr, middle):
        losses = [1.0] + [0.5] * (epochs - 1)
    elif lr > middle:
        losses = [2.0 - 1.8 * e / (epochs - 1) for e in range(epochs)]
    else:
        losses = [2.0] * epochs
    losses = [loss + 0.01 * seed for loss in losses]
    return {"train_loss": losses, "train_accuracy": [0.5] * epochs, "test_accuracy": [0.5] * epochs}


def test_finding_9_the_lr_is_chosen_by_the_area_it_is_scored_by(monkeypatch):
    """Issue 18, finding 9: the lr was chosen by the final loss and scored by the area under
    the curve; an lr that is fastest (lowest area) but ends higher lost to a slow one. Now the
    area chooses: the middle lr of every grid here."""
    monkeypatch.setattr(kingma_ba.data, "load", lambda name, path: None)
    monkeypatch.setattr(kingma_ba, "train", fake_train)
    numbers = kingma_ba.run(Settings("quick", 0, no_progress))
    for per_optimizer in numbers["models"].values():
        for name, found in per_optimizer.items():
            middle = sorted(kingma_ba.OPTIMIZERS[name][1][0])[1]
            assert found["lr"] == middle, (name, found["lr"])
            assert found["area_per_lr"][f"{middle:.3g}"] == min(found["area_per_lr"].values())


def test_an_lr_still_at_the_grid_end_after_the_extensions_is_flagged(monkeypatch):
    """Where the loss keeps falling with the lr, the grid is extended 3 times and the lr
    kept is flagged as at its end, in the numbers and in the summary."""
    seen = []

    def faster_with_lr(lr, seed):
        seen.append(lr)
        return {"train_loss": [1 / lr] * 3}

    found = kingma_ba.search(faster_with_lr, [1.0, 2.0, 4.0], [0, 1], no_progress, "")
    assert sorted(set(seen)) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert found["lr"] == 32.0 and found["at_edge"]
    assert "at the grid's end" in kingma_ba.setting("Adam", found)


@pytest.fixture(scope="module")
def numbers():
    return experiment("kingma-ba").run(Settings("quick", 0, no_progress))


def test_every_optimizer_learns_at_the_lr_of_its_lowest_area(numbers):
    """The protocol: each kept run lowers the training loss below chance (ln 10 = 2.30); its
    lr has the lowest mean area of the grid searched, which holds the given grid and is
    extended only past an end that was best; the area is the mean of the seeds' areas."""
    assert list(numbers["models"]) == list(kingma_ba.QUICK_MODELS)
    for model, per_optimizer in numbers["models"].items():
        for name, found in per_optimizer.items():
            assert found["curves"]["train_loss"][-1] < math.log(10), (model, name)
            areas = found["area_per_lr"]
            assert areas[f"{found['lr']:.3g}"] == min(areas.values()) == found["area"]
            assert found["area"] == pytest.approx(sum(found["areas"]) / len(numbers["seeds"]))
            given = sorted(kingma_ba.OPTIMIZERS[name][1][0])
            assert {f"{lr:.3g}" for lr in given} <= set(areas)
            if len(areas) > len(given):  # extended: the best is not inside the given grid
                assert not given[0] < found["lr"] < given[-1]


def test_the_quick_verdict_follows_the_numbers(numbers, tmp_path):
    assert len(numbers["seeds"]) == 3
    outcome, sentence = kingma_ba.verdict(numbers)
    holds = [
        kingma_ba.comparison(numbers, model)["decision"] == "no worse"
        for model in numbers["models"]
    ]
    assert outcome == verdict_of(holds)
    assert all(model in sentence for model in numbers["models"])
    assert "95 % CI" in sentence and kingma_ba.EXPERIMENT.rule == kingma_ba.RULE
    names = kingma_ba.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
