"""The lab's statistics: what a verdict rule may use, each stated before the run.

Runs of one experiment share their seeds across the arms compared (the same initial weights
and mini-batches per seed), so two arms are compared by the **paired** differences over the
seeds: their mean and a two-sided Student-t confidence interval (95 % unless stated). A claim
is then decided by where that interval lies against 0 or against a margin fixed in advance:

* :func:`lower` — "A is lower than B" (superiority): the whole interval below ``−margin``;
* :func:`no_worse` — "A is no worse than B" (non-inferiority, for claims of "as good as"):
  the whole interval below ``margin``;
* an interval that straddles the boundary decides nothing: the check does not hold
  (the verdict says "undecided" and why, never "reproduced" on a null result).

With one seed (a quick run) an interval is infinite, and only a margin-free reading of the
single difference is possible; the verdicts say so. :func:`best` picks a grid's optimum with
ties resolved by a rule and the grid edge flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LEVEL = 0.95


def t_quantile(probability: float, df: int) -> float:
    """The Student-t quantile with ``df`` degrees of freedom (scipy's)."""
    from scipy.stats import t

    return float(t.ppf(probability, df))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (n − 1; NaN for one value)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Interval:
    """A mean difference (A − B over paired seeds), its confidence interval and n."""

    mean: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    def text(self, digits: int = 3) -> str:
        if self.n < 2:
            return f"{self.mean:+.{digits}g} (1 seed, no interval)"
        return (
            f"{self.mean:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}] "
            f"({self.level:.0%} CI, {self.n} seeds)"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of a_i − b_i with its two-sided Student-t interval at ``level`` (infinite
    for one pair)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need equal, non-zero lengths: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean, sd = mean_sd(differences)
    n = len(differences)
    if n < 2:
        return Interval(mean, -math.inf, math.inf, n, level)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def lower(interval: Interval, margin: float = 0.0) -> bool:
    """Superiority of A (lower is better): the whole interval below −``margin``."""
    return interval.high < -margin


def no_worse(interval: Interval, margin: float) -> bool:
    """Non-inferiority of A (lower is better) at ``margin``: the whole interval below it."""
    return interval.high < margin


def decision(interval: Interval, margin: float = 0.0) -> str:
    """How an interval reads against ±``margin``: "lower", "higher" or "undecided"."""
    if interval.high < -margin:
        return "lower"
    if interval.low > margin:
        return "higher"
    return "undecided"


@dataclass(frozen=True)
class Best:
    """A grid's optimum: the key kept, the keys tied with it (within ``tie`` of the
    optimum's value, itself included), and whether the kept key is at an end of the grid."""

    key: float
    ties: tuple[float, ...]
    at_edge: bool

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "ties": list(self.ties), "at_edge": self.at_edge}


def best(values: Mapping[float, float], tie: float = 0.0) -> Best:
    """The key of the lowest value; every key within ``tie`` (absolute) of it is a tie, and
    a tie is resolved to the tied key nearest the middle of the tied range (geometric, for
    grids of ratios; the lower of two equally near), so that neither end of the grid wins
    a flat row by default. ``at_edge``: the kept key is the grid's first or last."""
    keys = sorted(values)
    lowest = min(values.values())
    tied = tuple(k for k in keys if values[k] <= lowest + tie)
    if len(tied) == 1:
        key = tied[0]
    else:
        positive = all(k > 0 for k in tied)
        centre = math.sqrt(tied[0] * tied[-1]) if positive else (tied[0] + tied[-1]) / 2
        distance = (
            (lambda k: abs(math.log(k / centre))) if positive else (lambda k: abs(k - centre))
        )
        key = min(tied, key=lambda k: (distance(k), k))
    return Best(key, tied, key in (keys[0], keys[-1]) and len(keys) > 1)
