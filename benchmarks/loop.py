"""The optimizer's share of the loop users write, adamkit against torch.optim, in one run.

    python benchmarks/loop.py                 # 20 M params in 200 tensors, 1 M in 1 000, 10 k in 10
    python benchmarks/loop.py --sizes 1000x1000 --algorithms AdamW
    python benchmarks/loop.py --blocks 6      # the cross-check: blocks of the loop itself

Each iteration is ``optimizer.zero_grad()`` (torch's default, ``set_to_none=True``), a real
backward that hands every param a fresh gradient tensor, and ``optimizer.step()``. The
optimizer's share is the iteration's time minus that of the same iteration with no optimizer
(gradients set to None by hand, the same forward and backward), so work an optimizer moves
into ``zero_grad`` or backward is counted. Each row is timed interleaved with its
references, one iteration of each in turn: the share is the median, over pairs of a bare
iteration and the optimizer's timed one after the other, of their difference. Each row
prints the ratio of the reference's share to ours: above 1 is faster than the reference.

References: torch's fused AdamW (the fastest torch step on the CPU), and torch's default
construction of the same algorithm (``torch.optim.X(params)``: its for-loop on the CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import adamkit

# name, adamkit constructor, torch constructor (None: torch has no such algorithm)
ALGORITHMS: list[tuple[str, Callable, Callable | None]] = [
    ("Adam", adamkit.Adam, torch.optim.Adam),
    ("AdamW", adamkit.AdamW, torch.optim.AdamW),
    ("AMSGrad", lambda p, **k: adamkit.Adam(p, amsgrad=True, **k), None),
    ("NAdam", adamkit.NAdam, torch.optim.NAdam),
    ("Adamax", adamkit.Adamax, torch.optim.Adamax),
    ("RMSprop", adamkit.RMSprop, torch.optim.RMSprop),
    ("Adagrad", adamkit.Adagrad, torch.optim.Adagrad),
    ("SGD momentum", lambda p, **k: adamkit.SGD(p, lr=0.01, momentum=0.9, **k), None),
]
TORCH_DEFAULT = {
    "AMSGrad": lambda p: torch.optim.Adam(p, amsgrad=True),
    "SGD momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
}


def make_model(total: int, count: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``count`` params of ``total // count`` elements and the constants of the loss
    Σ ⟨p, c⟩, whose backward hands each param a fresh gradient (c, copied)."""
    size = total // count
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(size, generator=generator).requires_grad_() for _ in range(count)]
    constants = [torch.randn(size, generator=generator) for _ in range(count)]
    return params, constants


def iteration(params, constants, optimizer) -> None:
    if optimizer is None:
        for param in params:
            param.grad = None
    else:
        optimizer.zero_grad()
    loss = sum((param * constant).sum() for param, constant in zip(params, constants, strict=True))
    loss.backward()
    if optimizer is not None:
        optimizer.step()


def timed(params, constants, optimizer) -> float:
    start = time.perf_counter()
    iteration(params, constants, optimizer)
    return time.perf_counter() - start


def shares(params, constants, optimizers: dict, pairs: int) -> dict[str, float]:
    """Median of each optimizer's time per iteration minus that of the bare iteration
    timed just before it: ``pairs`` times, one such pair per optimizer in turn, so that
    the machine's drift (tens of percent within minutes) falls alike on an optimizer and
    its bare iteration, and alike on every optimizer."""
    for optimizer in optimizers.values():
        for _ in range(3):  # warm-up: state created, kernels compiled
            iteration(params, constants, optimizer)
    samples: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(pairs):
        for name, optimizer in optimizers.items():
            bare = timed(params, constants, None)
            samples[name].append(timed(params, constants, optimizer) - bare)
    return {name: statistics.median(values) for name, values in samples.items()}


def blocked_shares(params, constants, optimizers: dict, rounds: int) -> dict[str, float]:
    """The same shares from blocks of the loop itself, a cross-check of :func:`shares`
    (whose reading of a step depends on the iteration before it): in each of ``rounds``
    rounds, each optimizer in turn, and the bare iteration, runs 18 iterations in a row,
    the last 15 timed; an optimizer's share is the median over the rounds of its
    iterations' median minus the bare iterations' median of the same round."""
    kinds = {"bare": None, **optimizers}
    samples: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(rounds):
        medians = {}
        for name, optimizer in kinds.items():
            for _ in range(3):
                iteration(params, constants, optimizer)
            times = [timed(params, constants, optimizer) for _ in range(15)]
            medians[name] = statistics.median(times)
        for name in optimizers:
            samples[name].append(medians[name] - medians["bare"])
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000000x200,1000000x1000,10000x10")
    parser.add_argument("--algorithms", default=",".join(name for name, *_ in ALGORITHMS))
    parser.add_argument("--pairs", type=int, help="per optimizer (default: 25 to 250 by size)")
    parser.add_argument(
        "--blocks", type=int, metavar="ROUNDS", help="time blocks of the loop instead of pairs"
    )
    arguments = parser.parse_args()
    wanted = arguments.algorithms.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("ratio = reference's share of the iteration / ours (above 1: faster)")
    for size in arguments.sizes.split(","):
        total, count = map(int, size.split("x"))
        pairs = arguments.pairs or max(25, min(250, 100_000_000 // max(total, 1)))
        how = f"{arguments.blocks} rounds of blocks" if arguments.blocks else f"{pairs} pairs"
        print(f"\n{total:,} params in {count} tensors ({how} per optimizer)")
        print(f"{'algorithm':<14}{'share ms':>10}{'vs fused AdamW':>16}{'default vs default':>20}")
        params, constants = make_model(total, count)
        for name, ours, theirs in ALGORITHMS:
            if name not in wanted:
                continue
            default = TORCH_DEFAULT.get(name, theirs)
            optimizers = {
                "fused": ours(params, backend="fused"),
                "default": ours(params),
                "torch fused AdamW": torch.optim.AdamW(params, fused=True),
            }
            if default is not None:
                optimizers["torch default"] = default(params)
            if arguments.blocks:
                result = blocked_shares(params, constants, optimizers, arguments.blocks)
            else:
                result = shares(params, constants, optimizers, pairs)
            fused_ratio = result["torch fused AdamW"] / result["fused"]
            line = f"{name:<14}{result['fused'] * 1e3:>10.3f}{fused_ratio:>15.2f}x"
            if default is not None:
                line += f"{result['torch default'] / result['default']:>19.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
