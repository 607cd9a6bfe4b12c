"""The experiment frame: a claim of a paper, a run that returns numbers, plots, a verdict.

An experiment is an :class:`Experiment` built in a module of :mod:`adamkit.lab.experiments`.
It uses only adamkit's public API. :func:`run_experiment` runs it into ``DIR/NAME/``
(``result.json`` and the PNGs) and the report (:mod:`adamkit.lab.report`) is rebuilt from
what the folder holds.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

import adamkit

T = TypeVar("T")
# "not tested": the run's precondition did not occur (SWATS never switched), so the claim
# was not put to the test
VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")


@dataclass(frozen=True)
class Settings:
    """How to run: ``mode`` "quick" (at most 60 s on 2 cores) or "full", the seed,
    ``progress(iterable, description, total)``, which wraps a long loop in a progress bar,
    and the data set of the training experiments (:func:`adamkit.lab.data.load`: "mnist1d"
    (the default), "digits", or "mnist"/"cifar10" read from the folder ``data``)."""

    mode: str
    seed: int
    progress: Callable[[Iterable[T], str, int], Iterator[T]]
    dataset: str = "mnist1d"
    data: str | None = None

    @property
    def quick(self) -> bool:
        return self.mode == "quick"


@dataclass(frozen=True)
class Experiment:
    """A paper's claim as an experiment.

    ``run(settings)`` returns the numbers (JSON-serialisable); ``plot(numbers, folder)``
    writes PNGs there and returns their file names; ``verdict(numbers)`` returns one of
    :data:`VERDICTS` and our result in a sentence, computed from the numbers by ``rule``:
    the decision rule, fixed before the run and printed in the report (seeds, statistic,
    margins, how ties and grid edges are resolved)."""

    name: str
    claim: str
    paper: str
    run: Callable[[Settings], dict[str, Any]]
    plot: Callable[[dict[str, Any], Path], list[str]]
    verdict: Callable[[dict[str, Any]], tuple[str, str]]
    rule: str = ""


def verdict_of(holds: Sequence[bool | None]) -> str:
    """The verdict from the checks of a claim, each True (holds), False (does not: it
    failed, or the data could not decide) or None (not tested: its precondition did not
    occur): "reproduced" when every tested check holds, "partly" when some do, "not
    reproduced" when none does, "not tested" when no check was tested."""
    tested = [hold for hold in holds if hold is not None]
    if not tested:
        return "not tested"
    return "reproduced" if all(tested) else "partly" if any(tested) else "not reproduced"


def no_progress(iterable: Iterable[T], description: str, total: int) -> Iterator[T]:
    return iter(iterable)


def bar_progress(iterable: Iterable[T], description: str, total: int) -> Iterator[T]:
    """A tqdm progress bar on stderr (left out where stderr is not a terminal)."""
    from tqdm import tqdm

    return iter(tqdm(iterable, desc=description, total=total, leave=False, disable=None))


NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def finite(value: Any) -> Any:
    """``value`` with NaN and ±inf as the strings "nan", "inf", "-inf" (JSON has no such
    numbers); :func:`restored` reads them back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def restored(value: Any) -> Any:
    """The numbers :func:`finite` wrote, with "nan", "inf" and "-inf" floats again: a
    verdict recomputed from a saved ``result.json`` sees what the run computed."""
    if isinstance(value, str):
        return NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {key: restored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restored(item) for item in value]
    return value


def read_result(folder: Path) -> dict[str, Any]:
    """The record :func:`run_experiment` wrote into ``folder``, its numbers restored."""
    record = json.loads((folder / "result.json").read_text())
    record["numbers"] = restored(record["numbers"])
    return record


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported when a plot is drawn (so that
    listing or running the lab's numbers needs no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_epochs(
    axis: Any, values: Sequence[float], spread: Sequence[float] | None = None, **style: Any
) -> str:
    """Plot ``values`` against the epochs 1, 2, ... on ``axis`` and, with ``spread`` (their
    standard deviation over the seeds), shade values ± spread (on a log axis the band's lower
    edge stays above a tenth of the value). Returns the line's colour."""
    epochs = range(1, len(values) + 1)
    (line,) = axis.plot(epochs, values, **style)
    if spread is not None:
        low = [v - s for v, s in zip(values, spread, strict=True)]
        if axis.get_yscale() == "log":
            low = [max(edge, v / 10) for edge, v in zip(low, values, strict=True)]
        high = [v + s for v, s in zip(values, spread, strict=True)]
        axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
    return line.get_color()


def lr_label(name: str, result: dict[str, Any]) -> str:
    """A legend entry: the optimizer's name and the lr a grid search kept."""
    return f"{name} (lr {result['lr']:.3g})"


def save(figure: Any, folder: Path, name: str, title: str) -> str:
    """Title, lay out, write ``folder/name`` (PNG, 100 dpi) and close ``figure``."""
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(folder / name, dpi=100, bbox_inches="tight")
    pyplot().close(figure)
    return name


def run_experiment(experiment: Experiment, settings: Settings, out: Path) -> dict[str, Any]:
    """Run ``experiment`` into ``out / experiment.name``: its numbers, verdict and timing
    in ``result.json``, its plots as PNGs. Returns the record written."""
    folder = out / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in (folder / "result.json", *folder.glob("*.png")):
        old.unlink(
            missing_ok=True
        )  # an interrupted run must not leave an earlier run's record behind
    start = time.perf_counter()
    numbers = experiment.run(settings)
    seconds = time.perf_counter() - start
    plots = experiment.plot(numbers, folder)
    verdict, summary = experiment.verdict(numbers)
    if verdict not in VERDICTS:
        raise ValueError(f"verdict of {experiment.name} must be one of {VERDICTS}: {verdict!r}")
    record = {
        "name": experiment.name,
        "claim": experiment.claim,
        "paper": experiment.paper,
        "verdict": verdict,
        "summary": summary,
        "rule": experiment.rule,
        "mode": settings.mode,
        "seed": settings.seed,
        # an experiment that ran on another data set than asked for names it
        "dataset": numbers.get("dataset", settings.dataset),
        "seconds": round(seconds, 2),
        "plots": plots,
        "versions": {
            "adamkit": adamkit.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "numbers": finite(numbers),
    }
    (folder / "result.json").write_text(json.dumps(record, indent=1) + "\n")
    return record
