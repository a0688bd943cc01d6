"""``optimlab bench``: optimlab's step against torch.optim's, in one process.

For each optimizer and parameter layout, optimlab's step and torch's for-loop,
foreach and fused steps (where torch has them on that device) run interleaved
round-robin, together with an in-place ``a.add_(b)`` on two 64 MiB buffers, which
gives the device's streaming bandwidth at that moment (12 bytes per element, on a
GPU too).  A run is ``rounds`` rounds of ``repeats`` such passes.  Each round gives
every implementation a median time; a row reports the median over the rounds,
optimlab's speed-up over the fastest other implementation with its range over the
rounds, and optimlab's share of the bandwidth limit (the bytes the optimizer must
move per parameter, divided by that bandwidth).  Absolute times drift 2x on shared
machines; ratios taken within one interleaved run do not.

Other work on the machine shows as an add_ bandwidth that swings between rounds; a
share above 100 % says the add_ was not the limit in that row (other work slowed it,
or caches served the step better).  Neither share is printed as if it were real: a
note under the table says why.  Each row also says how many bytes optimlab's step
allocates once state exists.

Pieces: :mod:`.cases` (what is timed), :mod:`.timing` (how), :mod:`.table`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from . import table
from .cases import LAYOUTS, OPTIMIZERS, build, make_params
from .timing import CpuClock, CudaClock, Stream, measure, summarize

HELP = "time optimlab's step against torch.optim (for-loop, foreach, fused), on CPU or GPU"

FULL = dict(layouts=["large", "gpt2", "small"], rounds=5, repeats=3, warmup=2)
# The full run's layouts at both ends, with fewer steps: each row means what it means in
# the full run, with a wider range.  (A smaller large tensor does not: at 4M elements the
# unfused steps' temporaries stay in cache, and the ratios move by up to 2x.)
QUICK = dict(layouts=["large", "small"], rounds=3, repeats=2, warmup=1)


class NothingToTime(Exception):
    """A row none of whose implementations runs here."""


def _names(table: dict[str, Any]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
        unknown = [name for name in names if name not in table]
        if unknown or not names:
            what = f"unknown {unknown[0]!r}" if unknown else f"no names in {text!r}"
            raise argparse.ArgumentTypeError(f"{what}; choose from {', '.join(table)}")
        return names

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, "
                                             f"got {text!r}")  # fmt: skip
        return value

    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    def default(key: str) -> str:
        return f"(default {FULL[key]}, --quick {QUICK[key]})"

    parser.epilog = (
        "A full run takes minutes on a 2-core machine; it says how long before it starts. "
        "Run it on a quiet machine: the table flags rows that other work disturbed."
    )
    parser.add_argument(
        "--optimizers",
        type=_names(OPTIMIZERS),
        metavar="A,B",
        default=[name for name, case in OPTIMIZERS.items() if case.default],
        help=f"comma-separated, from: {', '.join(OPTIMIZERS)} (default: all but AdamW-8bit, "
        "which also times torchao's and bitsandbytes' where they are installed); -bf16 and "
        "-8bit rows store optimlab's state so, against torch's float32 state",
    )
    parser.add_argument(
        "--layouts",
        type=_names(LAYOUTS),
        metavar="A,B",
        help="comma-separated, from: "
        + "; ".join(f"{name}: {what}" for name, (what, _) in LAYOUTS.items())
        + f" (default {','.join(FULL['layouts'])}, --quick {','.join(QUICK['layouts'])})",
    )
    parser.add_argument(
        "--rounds",
        type=_integer(1, 100),
        metavar="N",
        help=f"rounds of interleaved steps {default('rounds')}",
    )
    parser.add_argument(
        "--repeats",
        type=_integer(1, 1000),
        metavar="N",
        help=f"timed steps per round {default('repeats')}",
    )
    parser.add_argument(
        "--warmup",
        type=_integer(1, 100),
        metavar="N",
        help=f"untimed steps first, the first of which creates the state {default('warmup')}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 30 s on a quiet 2-core machine: the full run's layouts at both ends "
        "(one large tensor, 1,000 small ones: the same rows as in the full run, so the ratios "
        "mean the same, with a wider range) and fewer steps; options given explicitly apply",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (wall clock) or cuda (torch's current GPU, timed with CUDA events)",
    )
    parser.add_argument(
        "--threads",
        type=_integer(1, os.cpu_count() or 1),
        metavar="N",
        help="torch.set_num_threads (default: torch's)",
    )
    parser.add_argument("--no-torch", action="store_true", help="time optimlab only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail(f"no CUDA device (torch {torch.__version__} sees none)")
    profile = QUICK if args.quick else FULL
    settings = {key: getattr(args, key) or value for key, value in profile.items()}
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with torch.no_grad():
            return _run(args, settings, CudaClock() if args.device == "cuda" else CpuClock())
    except NothingToTime as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print("optimlab bench: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, settings: dict, clock: Any) -> int:
    meta = {
        "torch": torch.__version__,
        "device": clock.name(),
        "threads": torch.get_num_threads(),
        "kernels": _kernels(args.device),
        "load": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        **settings,
    }
    plan = [(layout, args.optimizers) for layout in settings["layouts"]]
    stream, others = Stream(clock.device), not args.no_torch
    started = time.perf_counter()
    meta["estimated_seconds"] = estimate(plan, clock, stream, settings, others)
    _say(
        f"optimlab bench: {len(plan) * len(args.optimizers)} rows, {settings['rounds']} rounds "
        f"of {settings['repeats']} steps: about {meta['estimated_seconds']:.0f} s more (from "
        f"a timed second step of each implementation, {time.perf_counter() - started:.0f} s)"
    )
    started = time.perf_counter()
    rows = []
    for layout, names in plan:
        params = make_params(layout, clock.device)
        for name in names:
            rows.append(bench_row(name, layout, params, clock, stream, settings, others))
            _say(f"  {name} / {layout} done")
    meta["seconds"] = time.perf_counter() - started
    _say(f"optimlab bench: took {meta['seconds']:.0f} s")
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    else:
        print(table.render(meta, rows))
    return 0


def bench_row(name: str, layout: str, params: list, clock: Any, stream: Stream,
              settings: dict, with_others: bool) -> dict:  # fmt: skip
    """One row: every implementation and the streaming add_, interleaved round-robin."""
    case = OPTIMIZERS[name]
    opts, missing = build(case, params, with_others)
    for opt in opts.values():
        for _ in range(settings["warmup"] - 1):  # build() took the first step
            opt.step()
    allocated = clock.allocated_bytes(opts["optimlab"].step) if "optimlab" in opts else None
    calls = {**{impl: opt.step for impl, opt in opts.items()}, "add_": stream}
    per_round = measure(calls, clock, settings["rounds"], settings["repeats"])
    numel = sum(p.numel() for p in params)
    return {
        "optimizer": name,
        "layout": layout,
        "params": numel,
        "tensors": len(params),
        "bytes_per_param": case.bytes_per_param,
        **summarize(per_round, case.bytes_per_param * numel),
        "missing": missing,
        "allocated_bytes_per_step": allocated,
    }


def estimate(plan: list[tuple[str, list[str]]], clock: Any, stream: Stream, settings: dict,
             with_others: bool) -> float:  # fmt: skip
    """Seconds the run will take: each implementation of each row is built and stepped
    twice here, and its second step counts for every step the run will take (the first
    step here also compiled what compiles, which the run's first step finds done).
    A row that has nothing to time raises NothingToTime, before the run."""
    steps = settings["warmup"] + settings["rounds"] * settings["repeats"]
    stream()
    streams = settings["rounds"] * settings["repeats"] * sum(len(names) for _, names in plan)
    total = clock.time(stream) * streams
    for layout, names in plan:
        started = time.perf_counter()
        params = make_params(layout, clock.device)
        total += time.perf_counter() - started
        for name in names:
            opts, missing = build(OPTIMIZERS[name], params, with_others)
            if not opts:
                why = "; ".join(f"{impl}: {reason}" for impl, reason in missing.items())
                raise NothingToTime(f"{name} has nothing to time here ({why})")
            for impl, opt in opts.items():
                # optimlab takes one more: the step whose allocations are counted
                total += clock.time(opt.step) * (steps + (impl == "optimlab"))
    return total


def _kernels(device: str) -> str:
    if device == "cpu":
        from ..kernels import cpu

        return cpu._optim.isa() if cpu.AVAILABLE else "not built: " + cpu.UNAVAILABLE
    from ..kernels import triton

    return "triton" if triton.AVAILABLE else f"foreach ({triton.UNAVAILABLE})"


def _fail(message: str) -> int:
    print(f"optimlab bench: error: {message}", file=sys.stderr)
    return 2


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
