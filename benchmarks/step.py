"""Optimizer step throughput, adamkit against torch.optim, in one run.

    python benchmarks/step.py            # 20 M params in 200 tensors, then 1 M in 1 000
    python benchmarks/step.py --quick    # 2 M in 20, then 100 k in 100
    python benchmarks/step.py --device cuda
    python benchmarks/step.py --precision-only   # Adam-family state in fp32, bf16, 8 bits

For each algorithm it prints the throughput (Gparam/s) of adamkit's fused and eager backends,
of torch's for-loop, foreach and fused implementations where torch has the algorithm, and of
heavyball's and pytorch-optimizer's own implementations where they are installed (fed a new
gradient per param at every step: heavyball sets them to None after a step), each also as a
ratio to torch's fused AdamW measured just before the row; the roofline ratio
(the bytes the algorithm must move per step over the machine's in-place streaming
bandwidth, against the time the fused step takes, the two timed alternately: see
``roofline``); the memory a fused step allocates beyond
its persistent state; and the first fused step's time (compile included).

adamkit's fused backend is measured with the same gradient tensors at every step, zeroed
in place as after ``optimizer.zero_grad(set_to_none=False)`` ("fused"), and with a new
gradient tensor per param at every step, as after ``zero_grad()`` ("fused, new grads"). It
reads both where they lie; the loop users write (``benchmarks/loop.py``) is the headline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator

import torch

import adamkit

# name, adamkit class, kwargs, torch class (or None), state tensors per param
ALGORITHMS = [
    ("SGD momentum", adamkit.SGD, {"lr": 0.01, "momentum": 0.9}, torch.optim.SGD, 1),
    ("SGDW", adamkit.SGDW, {"lr": 0.01}, None, 1),
    ("Adagrad", adamkit.Adagrad, {}, torch.optim.Adagrad, 1),
    ("RMSprop", adamkit.RMSprop, {}, torch.optim.RMSprop, 1),
    ("Adam", adamkit.Adam, {}, torch.optim.Adam, 2),
    ("AdamW", adamkit.AdamW, {}, torch.optim.AdamW, 2),
    ("AMSGrad", adamkit.Adam, {"amsgrad": True}, torch.optim.Adam, 3),
    ("Adamax", adamkit.Adamax, {}, torch.optim.Adamax, 2),
    ("NAdam", adamkit.NAdam, {}, torch.optim.NAdam, 2),
    ("SWATS", adamkit.SWATS, {}, None, 2),
    # its params are matrices with unit-norm rows (see make_params); v is one number per row
    ("ND-Adam", adamkit.NDAdam, {}, None, 1),
]
# where the params live: --device
DEVICE = torch.device("cpu")
TORCH_FUSED = {
    "cpu": {torch.optim.SGD, torch.optim.Adagrad, torch.optim.Adam, torch.optim.AdamW},
    "cuda": {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW},
}
# the same algorithm in other libraries, measured where the library is installed and has an
# implementation of its own: library -> algorithm -> (class name, kwargs)
OTHERS = {
    "heavyball": {
        "SGD momentum": ("SGD", {"lr": 0.01, "beta": 0.9}),
        "RMSprop": ("RMSprop", {}),
        "AdamW": ("AdamW", {}),
        "NAdam": ("NAdam", {}),
    },
    "pytorch_optimizer": {
        "SGDW": ("SGDW", {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}),
        "Adamax": ("AdaMax", {}),
        "SWATS": ("SWATS", {}),
    },
}


def other_class(library: str, name: str) -> tuple[type, dict] | None:
    """``OTHERS[library][name]`` imported, or None where either is missing."""
    entry = OTHERS[library].get(name)
    try:
        module = importlib.import_module(library)
    except ImportError:
        return None
    return None if entry is None else (getattr(module, entry[0]), entry[1])


def make_params(total: int, count: int, vectors: bool = False) -> list[torch.Tensor]:
    """``count`` fp32 params of ``total`` elements in all, with gradients: 1-D, or for
    ``vectors`` matrices whose rows (100 to 1 000 elements) have unit norm, ND-Adam's
    weight vectors."""
    generator = torch.Generator().manual_seed(0)
    size = total // count
    shape = (size // min(1000, size // 10), min(1000, size // 10)) if vectors else (size,)
    params = []
    for _ in range(count):
        param = torch.randn(shape, generator=generator).to(DEVICE)
        if vectors:
            adamkit.normalize_vectors_([param])
        param.requires_grad_()
        param.grad = torch.randn(shape, generator=generator).to(DEVICE)
        params.append(param)
    return params


def throughput(step: Callable[[], None], total: int, seconds: float) -> float:
    """Gparam/s of ``step``, after three warm-up calls (SWATS, fed the same gradient at
    every step, switches to SGD at its second step: the third compiles its SGD phase), over
    at least ``seconds``."""
    for _ in range(3):
        step()
    synchronize()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        step()
        calls += 1
        if calls % 10 == 0:
            synchronize()  # keeps the clock from reading a queue of launches
    synchronize()
    return total * calls / (time.perf_counter() - start) / 1e9


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def bandwidth(total: int, seconds: float) -> float:
    """In-place streaming bandwidth in GB/s: a ← a + b over two fp32 buffers (12 bytes per
    element moved), the access pattern of an optimizer step."""
    a, b = torch.randn(total, device=DEVICE), torch.randn(total, device=DEVICE)
    return throughput(lambda: a.add_(b), total, seconds) * 12


def roofline(step: Callable[[], None], total: int, moved: int, rounds: int = 15) -> float:
    """The fraction of its roofline ``step`` reaches: ``moved`` bytes per param at the
    in-place streaming bandwidth (:func:`bandwidth`'s a ← a + b, 12 bytes an element),
    against the step's time. The stream and the step are timed one after the other, round
    by round, and each at its best over the rounds: the machine's bandwidth drifts by tens
    of percent within minutes (a stream timed apart from the step carried that into the
    ratio: 0.85-1.04 for one AMSGrad step within an hour here), and what other work on the
    machine does only adds time, to either."""
    a, b = torch.randn(total, device=DEVICE), torch.randn(total, device=DEVICE)

    def seconds(call: Callable[[], None]) -> float:
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        return time.perf_counter() - start

    for _ in range(2):
        seconds(step), seconds(lambda: a.add_(b))
    times = [(seconds(lambda: a.add_(b)), seconds(step)) for _ in range(rounds)]
    return moved / 12 * min(t[0] for t in times) / min(t[1] for t in times)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the profiler's own prints (written by C++ to the process's stdout/stderr)."""
    sys.stdout.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def allocated_by(step: Callable[[], None]) -> int:
    """Bytes the CPU allocator hands out during one call (temporaries included): an upper
    bound of the step's extra peak memory. On CUDA: the call's peak over what was allocated
    before it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with (
        quiet(),
        torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as profile,
    ):
        step()
    return sum(
        event.cpu_memory_usage
        for event in profile.events()
        if event.cpu_memory_usage > 0 and not event.cpu_children
    )


def fused_step(cls, kwargs, params, fresh_grads: bool, **options) -> Callable[[], None]:
    optimizer = cls(params, backend="fused", **kwargs, **options)
    grads = [p.grad for p in params]
    if fresh_grads:

        def step() -> None:
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizer.step()

        return step
    optimizer.step()  # creates the state
    optimizer.zero_grad(set_to_none=False)
    for param, grad in zip(params, grads, strict=True):
        param.grad.copy_(grad)
    return optimizer.step


def run(total: int, count: int, seconds: float, others: bool, only: set[str]) -> None:
    """One table. torch's fused AdamW (the ratios' base) and the streaming bandwidth are
    measured again for each row, just before it (the roofline's stream, alternately with
    the step: :func:`roofline`): the machine's throughput drifts by tens of percent within
    a run, and a ratio to a number measured minutes earlier would carry that drift."""
    print(f"\n{total / 1e6:g} M fp32 params in {count} tensors")
    header = (
        "algorithm",
        "torch fused AdamW",
        "GB/s",
        "fused",
        "fused,new grads",
        "eager",
        "torch loop",
        "torch foreach",
        "torch fused",
        "heavyball",
        "pytorch-optimizer",
        "roofline",
        "extra MB",
        "1st step s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, cls, kwargs, torch_cls, states in ALGORITHMS:
        if only and name not in only:
            continue
        base_step = torch.optim.AdamW(make_params(total, count), fused=True).step
        base = throughput(base_step, total, seconds)
        stream = bandwidth(total, seconds)
        vectors = cls is adamkit.NDAdam
        params = make_params(total, count, vectors)
        start = time.perf_counter()
        step = fused_step(cls, kwargs, params, fresh_grads=False)
        synchronize()
        first = time.perf_counter() - start
        fused = throughput(step, total, seconds)
        extra = allocated_by(step) / 1e6
        fresh = fused_step(cls, kwargs, make_params(total, count, vectors), True)
        fresh = throughput(fresh, total, seconds)
        eager = throughput(
            cls(make_params(total, count, vectors), backend="eager", **kwargs).step, total, seconds
        )
        cells = [fused, fresh, eager]
        for variant in ({"foreach": False}, {"foreach": True}, {"fused": True}):
            if torch_cls is None or (
                "fused" in variant and torch_cls not in TORCH_FUSED[DEVICE.type]
            ):
                cells.append(None)
                continue
            optimizer = torch_cls(make_params(total, count), **kwargs, **variant)
            cells.append(throughput(optimizer.step, total, seconds))
        for library in OTHERS:
            other = other_class(library, name) if others else None
            if other is None:
                cells.append(None)
                continue
            params = make_params(total, count)
            optimizer, grads = other[0](params, **other[1]), [p.grad for p in params]

            def other_step(optimizer=optimizer, params=params, grads=grads) -> None:
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
                optimizer.step()

            cells.append(throughput(other_step, total, seconds))
        ratio = roofline(step, total, 4 * (3 + 2 * states))
        text = [f"{c:.3f} ({c / base:.2f}×)" if c is not None else "—" for c in cells]
        print(
            f"| {name} | {base:.3f} | {stream:.1f} | "
            + " | ".join(text)
            + f" | {ratio:.2f} | {extra:.1f} | {first:.1f} |"
        )


# bytes a step moves per param beyond the param (read, written) and its gradient (read): each
# state tensor read and written, in its precision (8 bits: a float32 absmax per 256 codes)
STATE_BYTES = {"float32": 8.0, "bfloat16": 4.0, "8bit": 2.0 + 8 / 256}
STATE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "8bit": "8bit"}


def run_precision(total: int, count: int, seconds: float, only: set[str]) -> None:
    """Adam-family fused steps with their state in float32, bfloat16 and 8 bits, each as a
    ratio to the float32-state step measured just before it, with its roofline ratio."""
    print(f"\nstate precision: {total / 1e6:g} M fp32 params in {count} tensors, fused backend")
    header = ["algorithm", *(f"{n} state" for n in STATE_DTYPES), "roofline (fp32, bf16, 8bit)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, cls, kwargs, _, states in ALGORITHMS:
        if states < 2 or name == "ND-Adam" or (only and name not in only):
            continue
        cells, rooflines = [], []
        for precision, state_dtype in STATE_DTYPES.items():
            params = make_params(total, count)
            step = fused_step(cls, kwargs, params, fresh_grads=False, state_dtype=state_dtype)
            cells.append(throughput(step, total, seconds))
            rooflines.append(roofline(step, total, 12 + states * STATE_BYTES[precision]))
        text = [f"{c:.3f} ({c / cells[0]:.2f}×)" for c in cells]
        print(
            f"| {name} | " + " | ".join(text) + f" | {', '.join(f'{r:.2f}' for r in rooflines)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per cell")
    parser.add_argument(
        "--others-everywhere",
        action="store_true",
        help="measure heavyball and pytorch-optimizer on the many-tensor table too (heavyball "
        "compiles its step over the tensor list: about 210 s per optimizer for 1 000 tensors)",
    )
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="rows to run")
    parser.add_argument("--device", default="cpu", help="where the params live (cpu, cuda)")
    parser.add_argument(
        "--precision-only", action="store_true", help="only the state-precision table"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=[],
        metavar="TOTALxCOUNT",
        help="tables to run instead of the default ones, e.g. 200000000x200",
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    unknown = set(args.only) - {row[0] for row in ALGORITHMS}
    if unknown:
        parser.error(f"unknown algorithm(s): {sorted(unknown)}")
    machine = (
        torch.cuda.get_device_name(DEVICE)
        if DEVICE.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {machine}")
    sizes = (
        [(2_000_000, 20), (100_000, 100)] if args.quick else [(20_000_000, 200), (1_000_000, 1_000)]
    )
    if args.sizes:
        sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    for index, (total, count) in enumerate(sizes):
        others = index == 0 or args.others_everywhere
        if not args.precision_only:
            run(total, count, args.seconds, others, set(args.only))
    run_precision(*sizes[0], args.seconds, set(args.only))


if __name__ == "__main__":
    main()
