"""``optimlab schedule``: print or plot schedules given as SPEC text."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import NoReturn

from .core import Schedule
from .spec import GRAMMAR, parse

HELP = "Print or plot learning-rate schedules given as SPEC text."

_EPILOG = f"""\
examples:
  optimlab schedule "warmup(500, cosine(3e-4, 9500, final_lr=3e-5))" --steps 10000 --out lr.png
  optimlab schedule "cosine(0.1, 1000)" "linear(0.1, 1000)" --print 0,500,999,1000
  optimlab schedule "one_cycle(0.1, 1000)" --steps 1000 --print --every 100

{GRAMMAR}"""

# More points than a figure has pixels only slows the plot down.
_MAX_PLOT_POINTS = 20_000
# Far beyond any training run, and below 2**53, so the plot's float x axis still
# tells every step apart.
_MAX_STEP = 10**15
# What matplotlib writes with its default backend and its own dependencies
# (its .pgf needs LaTeX; .raw and .rgba are pixel buffers, not images).
PLOT_FORMATS = tuple("png pdf svg svgz eps ps jpg jpeg tif tiff webp gif".split())


class _OneLineParser(argparse.ArgumentParser):
    """A parser that reports every mistake as one line and exit status 2.

    argparse prints its usage above the error, and hands an unknown option up to
    the top-level parser, which prints the top-level usage; both bury the one line
    that says what is wrong.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _integer(text: str, minimum: int) -> int:
    """``text`` as an integer from ``minimum`` to ``_MAX_STEP``; ``1e4`` is read as in a SPEC."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        value = int(number) if number.is_integer() else None
    if value is None or not minimum <= value <= _MAX_STEP:
        raise argparse.ArgumentTypeError(
            f"expected an integer from {minimum} to 1e15, got {text!r}"
        )
    return value


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _step_list(text: str) -> list[int]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated steps such as 0,100,1000, got {text!r}"
        )
    return [_integer(part.strip(), 0) for part in parts]


def configure(parser: argparse.ArgumentParser) -> None:
    # The dispatcher builds a plain ArgumentParser for each command.
    parser.__class__ = _OneLineParser
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC", help="a schedule, e.g. 'cosine(0.1, 1000)'"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=1000, help="last step to show (default 1000)"
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write a plot of all SPECs to this file: " + ", ".join(f".{f}" for f in PLOT_FORMATS),
    )
    parser.add_argument(
        "--print",
        dest="print_steps",
        nargs="?",
        const=[],
        type=_step_list,
        metavar="STEPS",
        help="print values at these steps (e.g. 0,100,1000); alone: every --every steps "
        "from 0 to --steps (the default when --out is not given)",
    )
    parser.add_argument(
        "--every", type=_positive_int, help="spacing of printed steps (default steps/10)"
    )
    parser.add_argument("--log", action="store_true", help="log-scale y axis in the plot")


def run(args: argparse.Namespace) -> int:
    problem = _conflict(args) or (_out_problem(args.out) if args.out else None)
    if problem:
        return _fail(problem)
    try:
        schedules = [parse(text) for text in args.specs]
    except ValueError as err:
        return _fail(str(err))
    try:
        if args.out:
            try:
                plot(schedules, args.steps, args.out, log=args.log)
            except ImportError:
                return _fail('plotting needs matplotlib: pip install "optimlab[plot]"')
            except OSError as err:
                return _fail(_cannot_write(args.out, err))
            print(f"wrote {args.out}", file=sys.stderr)
        if args.print_steps is not None or not args.out:
            every = args.every or max(1, args.steps // 10)
            print_table(schedules, args.print_steps or _every(args.steps, every))
    except ValueError as err:  # a value that overflows a float at some step
        return _fail(str(err))
    except BrokenPipeError:
        # `optimlab schedule ... | head`: the reader has what it wanted.  Point stdout
        # at /dev/null, or Python's final flush fails again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _conflict(args: argparse.Namespace) -> str | None:
    """Options that would be silently ignored in this combination."""
    table = args.print_steps is not None or not args.out
    if args.every is not None and (args.print_steps or not table):
        return "--every spaces the steps of a table printed by --print without STEPS"
    if args.log and not args.out:
        return "--log sets the plot's y axis; give --out FILE to plot"
    return None


def _out_problem(out: str) -> str | None:
    """Why a plot cannot be written to ``out``, found before any work is done."""
    path = Path(out)
    extension = path.suffix.lower()
    if extension.lstrip(".") not in PLOT_FORMATS:
        what = f"unknown extension {extension!r}" if extension else "no extension"
        known = ", ".join(f".{f}" for f in PLOT_FORMATS)
        return f"--out {out!r}: {what}; the extension picks the format, one of {known}"
    try:
        if path.is_dir():
            return f"--out {out!r} is a directory"
        if not path.parent.is_dir():
            return f"--out {out!r}: directory {str(path.parent)!r} does not exist"
    except OSError as err:  # a name too long to look up, say
        return _cannot_write(out, err)
    return None


def _cannot_write(out: str, err: OSError) -> str:
    return f"cannot write --out {out!r}: {err.strerror or err}"


def _fail(message: str) -> int:
    print(f"optimlab schedule: error: {message}", file=sys.stderr)
    return 2


def _every(last: int, every: int) -> Iterable[int]:
    """Steps ``0, every, 2 * every, ...`` and ``last``, lazily: ``--every 1`` may ask for many."""
    steps = range(0, last + 1, every)
    return steps if steps[-1] == last else chain(steps, [last])


def print_table(schedules: Sequence[Schedule], steps: Iterable[int]) -> None:
    """Tab-separated: a header ``step<TAB>spec...``, then one row per step."""
    print("\t".join(["step", *(s.spec for s in schedules)]))
    for t in steps:
        print("\t".join([str(t), *(f"{s(t):.8g}" for s in schedules)]))


def plot(schedules: Sequence[Schedule], steps: int, out: str, *, log: bool = False) -> None:
    """Overlay ``schedules`` over steps ``0..steps`` in one figure, saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(_every(steps, max(1, steps // _MAX_PLOT_POINTS)))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for schedule in schedules:
            ax.plot(xs, [schedule(t) for t in xs], label=schedule.spec)
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
