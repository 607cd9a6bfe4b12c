"""The ``adamkit`` command (also ``python -m adamkit``).

    adamkit lab list
    adamkit lab run NAME... [--quick | --full] [--out DIR] [--seed N]
    adamkit demo [--out DIR] [--seed N]

Bad input (an unknown experiment, a bad option, an output folder that cannot be written)
gives one line on stderr and exit status 2; Ctrl-C stops after keeping what finished (the
report lists it) with exit status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from adamkit.lab import MODULES, Settings, data, experiment, run_experiment
from adamkit.lab.frame import bar_progress
from adamkit.lab.report import build_index

DEFAULT_OUT = "adamkit-lab"


class UsageError(Exception):
    """Bad input to the command: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


MAX_SEED = 2**31 - 1


def seed(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"invalid seed {text!r}: expected an integer from 0 to {MAX_SEED}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    main = Parser(prog="adamkit", description="The Adam family of optimizers, and its lab.")
    commands = main.add_subparsers(dest="command", required=True, parser_class=Parser)
    lab = commands.add_parser("lab", help="the papers' experiments")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, parser_class=Parser)
    lab_commands.add_parser("list", help="each experiment with its claim")
    run = lab_commands.add_parser("run", help="run experiments and rebuild the report")
    run.add_argument("names", nargs="+", metavar="NAME", help="experiments (see 'lab list')")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode")
    size.add_argument("--full", action="store_const", const="full", dest="mode")
    demo = commands.add_parser("demo", help="the quick run of every experiment, then the report")
    for sub in (run, demo):
        sub.add_argument("--out", default=DEFAULT_OUT, help=f"folder (default: {DEFAULT_OUT})")
        sub.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
        sub.add_argument(
            "--dataset",
            choices=data.KNOWN,
            default="mnist1d",
            help="data set of the training experiments (default: mnist1d, generated)",
        )
        sub.add_argument("--data", metavar="PATH", help="folder of the MNIST or CIFAR-10 files")
    return main


def output_folder(text: str) -> Path:
    """``text`` as a folder we can write into (created if missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"output path {text!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create output folder {text!r}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {text!r} is not writable")
    return path


def run_all(names: Sequence[str], settings: Settings, out: Path) -> int:
    """Run ``names`` in order; the report is rebuilt after each. Returns the exit status."""
    order = list(MODULES)
    done = 0
    try:
        for name in names:
            start = time.perf_counter()
            print(f"{name} ({settings.mode}) ...", flush=True)
            record = run_experiment(experiment(name), settings, out)
            build_index(out, order)
            done += 1
            took = time.perf_counter() - start
            print(f"  {record['verdict']}: {record['summary']} [{took:.1f} s]", flush=True)
    except KeyboardInterrupt:
        index = build_index(out, order)
        print(f"\ninterrupted: {done} experiment(s) finished, report: {index}", file=sys.stderr)
        return 130
    except OSError as error:  # the output folder changed under us (a file named like a result)
        raise UsageError(f"cannot write the results in {str(out)!r}: {error}") from None
    print(f"report: {out / 'index.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command == "lab" and args.lab_command == "list":
            width = max(map(len, MODULES))
            for name in MODULES:
                print(f"{name:<{width}}  {experiment(name).claim}")
            return 0
        names = list(MODULES) if args.command == "demo" else args.names
        unknown = [name for name in names if name not in MODULES]
        if unknown:
            raise UsageError(f"unknown experiment {unknown[0]!r} (known: {', '.join(MODULES)})")
        mode = "quick" if args.command == "demo" else args.mode or "quick"
        try:  # read (and check) the data set before anything runs
            data.load(args.dataset, args.data)
        except (ValueError, OSError) as error:
            raise UsageError(str(error)) from None
        settings = Settings(mode, args.seed, bar_progress, args.dataset, args.data)
        return run_all(names, settings, output_folder(args.out))
    except UsageError as error:
        print(f"adamkit: error: {error}", file=sys.stderr)
        return 2


def entry() -> NoReturn:
    sys.exit(main())
