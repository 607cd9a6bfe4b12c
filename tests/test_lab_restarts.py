"""The restarts experiment: its schedules are the paper's, its verdict (paired intervals over
the seeds at AdamWR's snapshots) reaches every outcome on constructed numbers, and its quick
run read from the numbers."""

from __future__ import annotations

import math
import re

import pytest
import torch

from adamkit.lab import experiment, stats
from adamkit.lab.experiments import restarts
from adamkit.lab.frame import Settings, no_progress, verdict_of


def test_the_periods_end_at_2_6_14_30_62():
    assert restarts.period_ends(30) == [2, 6, 14, 30]
    assert restarts.period_ends(61) == [2, 6, 14, 30]
    assert restarts.period_ends(62) == [2, 6, 14, 30, 62]


@pytest.mark.parametrize("name", ["AdamW (cosine)", "AdamWR"])
def test_each_schedule_anneals_to_zero_restarts_and_normalizes_the_decay(name):
    """Stepped per batch, η is 1 at the start of every period and near 0 one batch before its
    end; the decay applied is λ_norm·sqrt(b/(B·T_i)) with T_i the period's epochs, times
    η (the paper's AdamW)."""
    steps, size, epochs = 11, 1400, 30
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = restarts.adamw([param], 0.01)
    scheduler = restarts.schedules(size, epochs)[name](optimizer, steps)
    starts = [0, *restarts.period_ends(epochs)[:-1]] if name == "AdamWR" else [0]
    ends = restarts.period_ends(epochs) if name == "AdamWR" else [epochs]
    group = optimizer.param_groups[0]
    for step in range(epochs * steps):
        epoch = step / steps
        start = max(s for s in starts if s <= epoch)
        length = min(e for e in ends if e > epoch) - start
        assert scheduler.T_i == length
        assert group["lr"] == pytest.approx(
            0.01 * (1 + math.cos(math.pi * (epoch - start) / length)) / 2
        )
        norm = restarts.WEIGHT_DECAY_NORM * math.sqrt(restarts.BATCH_SIZE / (size * length))
        assert group["weight_decay"] == pytest.approx(norm, rel=1e-12)
        if step + 1 in [e * steps for e in ends]:
            assert scheduler.multiplier < 0.01
        optimizer.step()
        scheduler.step()


def constructed(warm: list[list[float]], cosine: list[list[float]]) -> dict:
    """Numbers of a 30-epoch run whose test errors (%) per seed at the snapshots 2, 6, 14 and
    30 are ``warm`` (AdamWR) and ``cosine`` (AdamW)."""
    snapshots = [2, 6, 14, 30]

    def method(errors: list[list[float]]) -> dict:
        curves = []
        for row in errors:
            accuracy = [0.5] * 30
            for epoch, error in zip(snapshots, row, strict=True):
                accuracy[epoch - 1] = 1 - error / 100
            curves.append(accuracy)
        return {"lr": 0.01, "test_accuracy_per_seed": curves}

    return {
        "epochs": 30,
        "seeds": list(range(len(warm))),
        "snapshots": snapshots,
        "methods": {"AdamW (cosine)": method(cosine), "AdamWR": method(warm)},
    }


COSINE = [[40.0, 30.0, 25.0, 20.0], [42.0, 31.0, 26.0, 21.0], [41.0, 29.0, 24.0, 20.5]]


def shifted(by: list[float]) -> list[list[float]]:
    """COSINE's errors moved by ``by`` at each snapshot, with a little seed noise (0.1 pp)."""
    return [
        [e + d + 0.1 * ((seed + k) % 3 - 1) for k, (e, d) in enumerate(zip(row, by, strict=True))]
        for seed, row in enumerate(COSINE)
    ]


@pytest.mark.parametrize(
    "by, expected, readings",
    [
        # ahead at 2, 6, 14 (behind at the last, which is not judged)
        ([-5.0, -3.0, -2.0, +2.0], "reproduced", ["ahead", "ahead", "ahead", "behind"]),
        ([-5.0, +3.0, 0.0, 0.0], "partly", ["ahead", "behind", "undecided", "undecided"]),
        ([+5.0, +3.0, +2.0, -2.0], "not reproduced", ["behind", "behind", "behind", "ahead"]),
    ],
)
def test_the_verdict_reaches_every_outcome(by, expected, readings):
    outcome, sentence = restarts.verdict(constructed(shifted(by), COSINE))
    assert outcome == expected
    found = re.findall(r"epoch (\d+): [^;]*→ (\w+)", sentence)
    assert found == [(str(e), r) for e, r in zip([2, 6, 14, 30], readings, strict=True)]
    assert sentence.count("(not judged)") == 1


def test_a_lead_the_seeds_do_not_agree_on_decides_nothing():
    """AdamWR lower on average at every judged snapshot, but by less than the seeds differ:
    the intervals straddle 0, nothing is shown ahead (and one seed never shows anything)."""
    noisy = [[e + (3.0 if seed == 1 else -2.5) for e in row] for seed, row in enumerate(COSINE)]
    outcome, sentence = restarts.verdict(constructed(noisy, COSINE))
    assert outcome == "not reproduced" and "AdamWR ahead at 0 of the 3" in sentence
    one_seed = restarts.verdict(constructed([[10.0, 10.0, 10.0, 10.0]], COSINE[:1]))
    assert one_seed[0] == "not reproduced" and "1 seed, no interval" in one_seed[1]


@pytest.fixture(scope="module")
def numbers():
    return experiment("restarts").run(Settings("quick", 0, no_progress))


def test_both_learn_and_their_lr_is_the_best_of_the_grid(numbers):
    assert len(numbers["seeds"]) == 3 and numbers["snapshots"] == [2, 6, 14]
    for name, result in numbers["methods"].items():
        losses = result["curves"]["train_loss"]
        assert losses[-1] < 0.5 * losses[0], name
        assert result["curves"]["test_accuracy"][-1] > 0.3, name  # chance: 0.1
        finals = result["final_loss_per_lr"]
        assert finals[f"{result['lr']:.3g}"] == min(finals.values())
        per_seed = result["test_accuracy_per_seed"]
        assert len(per_seed) == 3
        for epoch, mean in enumerate(result["curves"]["test_accuracy"]):
            assert mean == pytest.approx(sum(row[epoch] for row in per_seed) / 3)


def test_the_quick_verdict_follows_the_numbers(numbers, tmp_path):
    cosine = restarts.test_errors(numbers, "AdamW (cosine)")
    warm = restarts.test_errors(numbers, "AdamWR")
    ahead = [
        stats.decision(stats.paired([w[k] for w in warm], [c[k] for c in cosine])) == "lower"
        for k in range(len(numbers["snapshots"]) - 1)
    ]
    outcome, sentence = restarts.verdict(numbers)
    assert outcome == verdict_of(ahead)
    assert f"ahead at {sum(ahead)} of the {len(ahead)} snapshots" in sentence
    assert restarts.EXPERIMENT.rule == restarts.RULE
    names = restarts.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
