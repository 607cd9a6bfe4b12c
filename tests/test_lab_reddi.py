"""The reddi experiment: the problems' gradients, the runs (several problems as the
coordinates of one parameter, AdaGrad at a constant lr, the regret by hand), the verdict
rule on constructed numbers (every outcome; AMSGrad must reach the optimum), and the quick
run read from its numbers and through the real result.json writer and reader."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from adamkit.lab import experiment
from adamkit.lab.experiments import reddi
from adamkit.lab.frame import Settings, no_progress, read_result, run_experiment


def test_gradients_follow_the_problems():
    assert reddi.gradients("analytic", 7, 0).tolist() == [reddi.C, -1, -1, reddi.C, -1, -1, reddi.C]
    online = reddi.gradients("online", 203, 0).tolist()
    assert [t + 1 for t, g in enumerate(online) if g == 1010.0] == [1, 102, 203]
    assert set(online) == {1010.0, -10.0}
    stochastic = reddi.gradients("stochastic", 100_000, 3)
    assert set(stochastic.tolist()) == {1010.0, -10.0}
    assert 0.008 < (stochastic == 1010.0).double().mean().item() < 0.012
    assert torch.equal(stochastic, reddi.gradients("stochastic", 100_000, 3))  # seeded
    assert not torch.equal(stochastic, reddi.gradients("stochastic", 100_000, 4))


def test_problems_run_together_as_each_would_alone():
    """The methods act per coordinate: the online problem and two stochastic seeds as the
    columns of one parameter give, bit for bit, the runs each gives alone."""
    grads = torch.stack(
        [
            reddi.gradients("online", 3000, 0),
            reddi.gradients("stochastic", 3000, 1),
            reddi.gradients("stochastic", 3000, 2),
        ],
        dim=1,
    )
    for make, decay in reddi.optimizers("online").values():
        together = reddi.follow(make, grads, decay, no_progress, "")
        for column in range(3):
            alone = reddi.follow(make, grads[:, column : column + 1], decay, no_progress, "")
            assert torch.equal(together[:, column], alone[:, 0])


def test_adagrad_runs_at_a_constant_lr():
    """Issue 18, finding 7: AdaGrad got α/√t on top of its own 1/√(Σg²) decay (x̄ = −0.22
    after 20 k steps). Its iterates are now x_t = clip(x_{t−1} − α g_t / (√(Σ_{s≤t} g_s²)
    + 1e-10)) with α = 0.1 at every step, written out by hand."""
    make, decay = reddi.optimizers("analytic")["AdaGrad"]
    grads = reddi.gradients("analytic", 500, 0)
    path = reddi.follow(make, grads[:, None], decay, no_progress, "")
    x, total, expected = 0.0, 0.0, []
    for g in grads.tolist():
        total += g * g
        x = min(max(x - reddi.ALPHA * g / (math.sqrt(total) + 1e-10), -1.0), 1.0)
        expected.append(x)
    assert path[:, 0].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # the paper's α/√t stays on Adam, AMSGrad and SGD
    assert all(reddi.optimizers("analytic")[name][1] for name in ("Adam", "AMSGrad", "SGD"))


def test_the_regret_is_the_sum_of_the_losses_over_the_optimums():
    """R_t/t = (1/t) Σ_s g_s·(x_{s−1} + 1), x_0 = 0, written out by hand."""
    grads = torch.tensor([[3.0], [-1.0], [-1.0], [3.0], [-1.0]], dtype=torch.float64)
    path = torch.tensor([[0.5], [-0.2], [1.0], [0.0], [-1.0]], dtype=torch.float64)
    (found,) = reddi.record(path, grads)
    before, regret = [0.0, 0.5, -0.2, 1.0, 0.0], 0.0
    for t, (g, x) in enumerate(zip([3.0, -1.0, -1.0, 3.0, -1.0], before, strict=True), start=1):
        regret += g * (x + 1)
        if t in found["step"]:
            assert found["regret"][found["step"].index(t)] == pytest.approx(regret / t)
    assert found["step"] == [1, 2, 3, 4, 5] and found["x"] == [0.5, -0.2, 1.0, 0.0, -1.0]


def constructed(adam: float, amsgrad: float, online_amsgrad: float | None = None) -> dict:
    """Numbers in which Adam's x̄ is ``adam`` and AMSGrad's ``amsgrad`` on every problem
    and seed (``online_amsgrad`` on the online and stochastic problems, where given)."""

    def runs(value):
        return {"step": [1], "x": [value], "regret": [0.0], "x_end": value}

    numbers = {"seeds": [0, 1, 2]}
    for problem, (_, steps) in reddi.STEPS.items():  # the full run's
        count = 3 if problem == "stochastic" else 1
        later = amsgrad if online_amsgrad is None or problem == "analytic" else online_amsgrad
        methods = {"Adam": [runs(adam)] * count, "AMSGrad": [runs(later)] * count}
        numbers[problem] = {"steps": steps, "methods": methods}
    return numbers


def test_the_verdict_reaches_every_outcome():
    assert reddi.verdict(constructed(0.99, -0.99))[0] == "reproduced"
    assert reddi.verdict(constructed(0.99, -0.99, online_amsgrad=-0.5))[0] == "partly"
    assert reddi.verdict(constructed(-0.99, 0.99))[0] == "not reproduced"


def test_amsgrad_must_reach_the_optimum_on_the_online_problems():
    """Issue 18, finding 7: `amsgrad < adam − 0.5` passed with AMSGrad at −0.04 and +0.04,
    far from the optimum −1. Now it must be within 0.1 of −1 in every run."""
    outcome, sentence = reddi.verdict(constructed(0.95, -0.99, online_amsgrad=-0.04))
    assert outcome == "partly"
    assert "online: AMSGrad at −1, stochastic: AMSGrad at −1" in sentence
    assert "cannot show it" not in sentence  # the full run's steps: no excuse
    numbers = constructed(0.95, -0.99, online_amsgrad=-0.95)
    numbers["stochastic"]["methods"]["AMSGrad"][1] = dict(
        numbers["stochastic"]["methods"]["AMSGrad"][1], x_end=-0.85
    )  # one seed short of the tolerance
    assert reddi.checks(numbers)["stochastic: AMSGrad at −1"] is False
    assert reddi.checks(numbers)["online: AMSGrad at −1"] is True


@pytest.fixture(scope="module")
def numbers():
    return experiment("reddi").run(Settings("quick", 0, no_progress))


def mean_x(numbers, problem, method):
    return reddi.final(numbers, problem, method)


def test_adam_goes_to_the_worst_point_amsgrad_sgd_and_adagrad_to_the_optimum(numbers):
    """Theorem 1's problem: Adam ends near +1; AMSGrad, SGD and AdaGrad (at a constant lr)
    near the optimum −1."""
    (adam,) = mean_x(numbers, "analytic", "Adam")
    assert adam > 0.9
    for method in ("AMSGrad", "SGD", "AdaGrad"):
        assert mean_x(numbers, "analytic", method)[0] < -0.9, method
    regret = {m: r[0]["regret"][-1] for m, r in numbers["analytic"]["methods"].items()}
    assert regret["Adam"] > 0.5 and regret["AMSGrad"] < regret["Adam"] / 10


def test_the_papers_synthetic_problems_in_the_quick_run(numbers):
    """§5: Adam's iterate goes to +1 in every run; AMSGrad's is below it but, after the
    quick run's 50 k steps at lr 1e-3, not yet at −1 (it needs about 1.5 M): the quick
    verdict is "partly", and says which checks failed."""
    assert len(numbers["stochastic"]["methods"]["Adam"]) == reddi.SEEDS[0]
    for problem in ("online", "stochastic"):
        adam, amsgrad = mean_x(numbers, problem, "Adam"), mean_x(numbers, problem, "AMSGrad")
        assert min(adam) > 0.9 and max(amsgrad) < min(adam) - 0.5
    regret = {m: r[0]["regret"][-1] for m, r in numbers["online"]["methods"].items()}
    assert regret["AMSGrad"] < regret["Adam"]
    found = reddi.checks(numbers)
    failed = {name for name, held in found.items() if not held}
    assert failed == {"online: AMSGrad at −1", "stochastic: AMSGrad at −1"}
    outcome, sentence = reddi.verdict(numbers)
    assert outcome == "partly" and "this run's 50,000 cannot show it" in sentence


def test_the_verdict_read_back_from_result_json_is_the_runs(numbers, tmp_path):
    saved = copy.deepcopy(numbers)
    fake = dataclasses.replace(experiment("reddi"), run=lambda settings: saved)
    written = run_experiment(fake, Settings("quick", 0, no_progress), tmp_path)
    record = read_result(tmp_path / "reddi")
    assert reddi.verdict(record["numbers"]) == (written["verdict"], written["summary"])
    assert record["rule"] == reddi.RULE and "Adam x̄ = +" in record["summary"]
    assert all((tmp_path / "reddi" / name).stat().st_size > 10_000 for name in record["plots"])
