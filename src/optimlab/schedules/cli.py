"""``optimlab schedule``: print or plot schedules given as SPEC text."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _step_list(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated steps >= 0 such as 0,100,1000, got {text!r}"
        )
    return steps


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC", help="a schedule, e.g. 'cosine(0.1, 1000)'"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=1000, help="last step to show (default 1000)"
    )
    parser.add_argument("--out", metavar="PNG", help="write a plot of all SPECs to this file")
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
    try:
        schedules = [parse(text) for text in args.specs]
    except ValueError as err:
        return _fail(str(err))
    if args.out:
        try:
            plot(schedules, args.steps, args.out, log=args.log)
        except ImportError:
            return _fail('plotting needs matplotlib: pip install "optimlab[plot]"')
        print(f"wrote {args.out}", file=sys.stderr)
    if args.print_steps is not None or not args.out:
        steps = args.print_steps or _every(args.steps, args.every or max(1, args.steps // 10))
        print_table(schedules, steps)
    return 0


def _fail(message: str) -> int:
    print(f"optimlab schedule: error: {message}", file=sys.stderr)
    return 2


def _every(last: int, every: int) -> list[int]:
    steps = list(range(0, last + 1, every))
    return steps if steps[-1] == last else [*steps, last]


def print_table(schedules: Sequence[Schedule], steps: Sequence[int]) -> None:
    """Tab-separated: a header ``step<TAB>spec...``, then one row per step."""
    print("\t".join(["step", *(s.spec for s in schedules)]))
    for t in steps:
        print("\t".join([str(t), *(f"{s(t):.8g}" for s in schedules)]))


def plot(schedules: Sequence[Schedule], steps: int, out: str, *, log: bool = False) -> None:
    """Overlay ``schedules`` over steps ``0..steps`` in one figure, saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = _every(steps, max(1, steps // _MAX_PLOT_POINTS))
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
