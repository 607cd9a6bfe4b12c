"""The restarts experiment: its schedules are the paper's, and its quick run read from the
numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from adamkit.lab import experiment
from adamkit.lab.experiments import restarts
from adamkit.lab.frame import Settings, no_progress


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


@pytest.fixture(scope="module")
def numbers():
    return experiment("restarts").run(Settings("quick", 0, no_progress))


def test_both_learn_and_their_lr_is_the_best_of_the_grid(numbers):
    for name, result in numbers["methods"].items():
        assert result["curves"]["train_loss"][-1] < 0.1 * math.log(10), name
        assert result["curves"]["test_accuracy"][-1] > 0.95, name
        finals = result["final_loss_per_lr"]
        assert finals[f"{result['lr']:.3g}"] == min(finals.values())


def test_restarts_are_ahead_before_the_end(numbers):
    """The claim's direction on digits: at AdamWR's snapshots before the last its mean test
    error is below AdamW's (one cosine) at the same epochs."""
    cosine = restarts.test_errors(numbers, "AdamW (cosine)")[:-1]
    warm = restarts.test_errors(numbers, "AdamWR")[:-1]
    assert sum(warm) < sum(cosine), (warm, cosine)


def test_verdict_follows_the_numbers(numbers, tmp_path):
    cosine = restarts.test_errors(numbers, "AdamW (cosine)")[:-1]
    warm = restarts.test_errors(numbers, "AdamWR")[:-1]
    ahead = [w <= c for c, w in zip(cosine, warm, strict=True)]
    outcome, sentence = restarts.verdict(numbers)
    assert outcome == ("reproduced" if all(ahead) else "partly" if any(ahead) else "not reproduced")
    assert f"at {sum(ahead)} of the {len(ahead)} snapshots" in sentence
    behind = json.loads(json.dumps(numbers))
    accuracy = behind["methods"]["AdamWR"]["curves"]["test_accuracy"]
    for epoch in numbers["snapshots"]:
        accuracy[epoch - 1] = 0.0
    assert restarts.verdict(behind)[0] == "not reproduced"
    names = restarts.plot(numbers, tmp_path)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
