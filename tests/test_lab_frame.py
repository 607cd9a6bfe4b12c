"""The lab's frame and statistics (issue 18): the verdict vocabulary, the result.json round
trip through the real writer and reader, and each decision rule of adamkit.lab.stats on
constructed numbers, every outcome reached."""

from __future__ import annotations

import math

import pytest

from adamkit.lab import stats
from adamkit.lab.frame import (
    Experiment,
    Settings,
    no_progress,
    read_result,
    run_experiment,
    verdict_of,
)
from adamkit.lab.report import build_index


@pytest.mark.parametrize(
    "holds, expected",
    [
        ([True, True], "reproduced"),
        ([True, False], "partly"),
        ([False, False], "not reproduced"),
        ([None, None], "not tested"),
        ([True, None], "reproduced"),
        ([False, None], "not reproduced"),
        ([True, False, None], "partly"),
    ],
)
def test_verdict_of_every_outcome(holds, expected):
    assert verdict_of(holds) == expected


def test_a_verdict_recomputed_from_the_saved_result_sees_the_run_numbers(tmp_path):
    """An infinite loss (a diverged run) written by run_experiment and read back by
    read_result is a float again, so the verdict recomputed from the file is the run's
    (the string "inf" raised TypeError in the comparison before)."""

    def verdict(numbers):
        holds = numbers["adam"] < numbers["sgd"]
        return verdict_of([holds]), f"adam {numbers['adam']}, sgd {numbers['sgd']}"

    experiment = Experiment(
        name="fake",
        claim="c",
        paper="p",
        run=lambda settings: {"adam": 0.5, "sgd": math.inf, "curve": [1.0, math.nan]},
        plot=lambda numbers, folder: [],
        verdict=verdict,
        rule="adam's loss below sgd's",
    )
    written = run_experiment(experiment, Settings("quick", 0, no_progress), tmp_path)
    record = read_result(tmp_path / "fake")
    assert record["numbers"]["sgd"] == math.inf and math.isnan(record["numbers"]["curve"][1])
    assert verdict(record["numbers"]) == (written["verdict"], written["summary"])
    assert record["rule"] == "adam's loss below sgd's"
    page = build_index(tmp_path, ["fake"]).read_text()
    assert "Verdict rule (fixed before the run)" in page and "adam&#x27;s loss below" in page


def test_a_not_tested_verdict_is_shown_as_such(tmp_path):
    experiment = Experiment(
        "fake", "c", "p", lambda s: {}, lambda n, f: [], lambda n: (verdict_of([None]), "no switch")
    )
    run_experiment(experiment, Settings("quick", 0, no_progress), tmp_path)
    page = build_index(tmp_path, ["fake"]).read_text()
    assert ">not tested</span>" in page


def test_mean_and_sample_standard_deviation():
    mean, sd = stats.mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and sd == pytest.approx(math.sqrt(5 / 3), rel=1e-15)  # n − 1
    assert math.isnan(stats.mean_sd([1.0])[1])


def test_the_paired_interval_is_students():
    """Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 2.4842."""
    interval = stats.paired([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.high - interval.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.low == pytest.approx(2.0 - 4.302653 / math.sqrt(3), rel=1e-6)
    single = stats.paired([1.0], [2.0])
    assert single.mean == -1.0 and single.low == -math.inf and single.high == math.inf
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        stats.paired([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    "a, b, margin, lower, no_worse, decision",
    [
        ([1.0, 1.1, 0.9, 1.0, 1.05], [2.0, 2.1, 1.9, 2.0, 2.0], 0.0, True, True, "lower"),
        ([2.0, 2.1, 1.9, 2.0, 2.0], [1.0, 1.1, 0.9, 1.0, 1.05], 0.0, False, False, "higher"),
        ([1.0, 2.0, 0.5, 1.5, 1.0], [1.2, 1.0, 1.1, 1.3, 1.0], 0.0, False, False, "undecided"),
        # a small, certain deficit inside the margin: no worse, not lower
        ([1.02, 1.03, 1.02, 1.03, 1.02], [1.0, 1.0, 1.0, 1.0, 1.0], 0.05, False, True, "undecided"),
        # one seed decides nothing
        ([1.0], [2.0], 0.0, False, False, "undecided"),
    ],
)
def test_every_decision_is_reached(a, b, margin, lower, no_worse, decision):
    interval = stats.paired(a, b)
    assert stats.lower(interval, margin) is lower
    assert stats.no_worse(interval, margin) is no_worse
    assert stats.decision(interval, margin) == decision


def test_best_resolves_ties_explicitly_and_flags_edges():
    clear = stats.best({0.1: 3.0, 0.3: 1.0, 1.0: 2.0})
    assert (clear.key, clear.ties, clear.at_edge) == (0.3, (0.3,), False)
    edge = stats.best({0.1: 1.0, 0.3: 2.0, 1.0: 3.0})
    assert edge.key == 0.1 and edge.at_edge
    # a flat row: every key ties; the middle of the tied range is kept, not the first
    flat = stats.best({1e-4: 0.5, 1e-3: 0.5, 1e-2: 0.5, 1e-1: 0.5, 1.0: 0.5})
    assert flat.key == 1e-2 and len(flat.ties) == 5 and not flat.at_edge
    within = stats.best({0.0: 0.50, 0.1: 0.505, 0.2: 0.9}, tie=0.01)
    assert within.ties == (0.0, 0.1) and within.key == 0.0  # equally near the middle: the lower
