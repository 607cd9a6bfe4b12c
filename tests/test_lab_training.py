"""The lab's training protocol: same start and mini-batches for every optimizer, the lr grid
extended past a best end."""

from __future__ import annotations

import math

import pytest
import torch

import adamkit
from adamkit.lab import data, models
from adamkit.lab.frame import no_progress
from adamkit.lab.training import grid_search, initial_weights, mean_history, spread, train


def curve(loss):
    return {"train_loss": [loss], "train_accuracy": [0.0], "test_accuracy": [0.0]}


def test_the_grid_is_extended_past_a_best_end():
    calls = []

    def run(lr, seed):
        calls.append(lr)
        return curve((math.log10(lr) - math.log10(0.9)) ** 2)

    result = grid_search(run, [0.01, 0.03, 0.09], [0], no_progress, "x")
    assert result.lr == pytest.approx(0.81) and not result.at_edge
    expected = ["0.01", "0.03", "0.09", "0.27", "0.81", "2.43"]
    assert [f"{lr:.3g}" for lr in calls] == expected
    assert list(result.scores_text()) == expected


def test_an_inside_best_is_not_extended_and_seeds_are_averaged():
    def run(lr, seed):
        return curve(abs(lr - 0.03) + seed)

    result = grid_search(run, [0.1, 0.01, 0.03], [0, 2], no_progress, "x")
    assert result.lr == 0.03 and mean_history(result.kept)["train_loss"] == [1.0]
    assert spread(result.kept, "train_loss") == [pytest.approx(2**0.5, rel=1e-15)]  # n − 1
    assert len(result.scores) == 3


def test_every_optimizer_starts_alike_and_sees_the_same_batches():
    dataset = data.digits()
    start = initial_weights(models.mlp, dataset, seed=3)
    model = models.mlp((1, 8, 8), 10)
    model.load_state_dict(start)

    def frozen(params, lr):
        return adamkit.SGD(params, lr=lr)

    still = train(models.mlp, dataset, frozen, 0.0, epochs=2, seed=3)
    again = train(models.mlp, dataset, frozen, 0.0, epochs=2, seed=3)
    assert still == again  # same start, same batches, same dropout masks
    # lr 0: the weights stay the initial ones
    assert still["train_accuracy"][0] == still["train_accuracy"][1]
    moving = train(models.mlp, dataset, lambda p, lr: adamkit.Adam(p, lr=lr), 1e-2, 2, 3)
    assert moving["train_loss"][1] < still["train_loss"][1]
    other = initial_weights(models.mlp, dataset, seed=4)
    assert not torch.equal(
        start["0.weight"] if "0.weight" in start else next(iter(start.values())),
        next(iter(other.values())),
    )


def test_a_diverging_run_is_recorded_as_infinite_loss():
    dataset = data.digits()
    history = train(models.logistic, dataset, lambda p, lr: adamkit.SGD(p, lr=lr), 1e38, 3, 0)
    assert history["train_loss"][-1] == math.inf
    assert len(history["train_loss"]) == len(history["test_accuracy"]) == 3


def test_a_schedule_is_built_with_the_epoch_length_and_stepped_after_every_batch():
    dataset = data.digits()
    built = []

    def schedule(optimizer, steps_per_epoch):
        built.append(steps_per_epoch)
        # lr for the first two steps only
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: float(step < 2))

    def make(params, lr):
        return adamkit.Adam(params, lr=lr)

    frozen = train(models.mlp, dataset, make, 1e-2, 3, 0, schedule=schedule)
    assert built == [math.ceil(len(dataset.train_y) / 128)]
    # after two steps the weights no longer move
    assert frozen["train_accuracy"][0] == frozen["train_accuracy"][2]
    unscheduled = train(models.mlp, dataset, make, 1e-2, 3, 0)
    assert unscheduled["train_accuracy"][2] != frozen["train_accuracy"][2]
