"""``optimlab bench``: the fused CPU kernels against torch.optim, in one process.

For each optimizer and parameter layout, optimlab's step (the kernels) and torch's
for-loop, foreach and fused steps (fused where torch has it on CPU) run
interleaved round-robin, together with an in-place ``a.add_(b)`` on two 64 MiB
buffers, which gives the machine's streaming bandwidth at that moment (12 bytes
per element).  Reported per row: medians, optimlab's speed-up over torch's
fastest implementation, and its share of the bandwidth limit (the bytes the
optimizer must move per parameter, divided by that bandwidth).  Absolute times
drift 2x on shared machines; ratios taken within one interleaved run do not.

Each row also says how many bytes one step allocates once state exists (torch's
profiler, a few steps in): optimlab's kernels allocate nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

import optimlab

HELP = "time the fused CPU kernels against torch.optim (for-loop, foreach, fused)"


class Case(NamedTuple):
    cls: str  # the class name in optimlab and in torch.optim
    kwargs: dict[str, Any]
    bytes_per_param: int  # float32, one fused pass: read and write what the update needs


# bytes: param r+w, grad r = 12; each state tensor r+w adds 8 (DESIGN.md)
OPTIMIZERS: dict[str, Case] = {
    "SGD": Case("SGD", dict(lr=1e-3), 12),
    "momentum": Case("SGD", dict(lr=1e-3, momentum=0.9), 20),
    "Nesterov": Case("SGD", dict(lr=1e-3, momentum=0.9, nesterov=True), 20),
    "Adagrad": Case("Adagrad", dict(lr=1e-3), 20),
    "RMSprop": Case("RMSprop", dict(lr=1e-3), 20),
    "RMSprop+momentum": Case("RMSprop", dict(lr=1e-3, momentum=0.9), 28),
    "Adam": Case("Adam", dict(lr=1e-3), 28),
    "AdamW": Case("AdamW", dict(lr=1e-3), 28),
    "NAdam": Case("NAdam", dict(lr=1e-3), 28),
}


def gpt2_shapes(width: int = 192, layers: int = 12, vocab: int = 50257, context: int = 1024):
    """GPT-2 small's parameter shapes (at 1/4 width by default: 15.2M params, 148 tensors)."""
    shapes = [(vocab, width), (context, width)]  # token and position embeddings
    for _ in range(layers):
        shapes += [(width,), (width,)]  # ln_1
        shapes += [(width, 3 * width), (3 * width,), (width, width), (width,)]  # attention
        shapes += [(width,), (width,)]  # ln_2
        shapes += [(width, 4 * width), (4 * width,), (4 * width, width), (width,)]  # MLP
    return shapes + [(width,), (width,)]  # ln_f


LAYOUTS: dict[str, tuple[str, Callable[[], list[tuple[int, ...]]]]] = {
    "large": ("one tensor of 16M elements", lambda: [(16 * 1024 * 1024,)]),
    "gpt2": ("GPT-2 small at 1/4 width (148 tensors)", gpt2_shapes),
    "small": ("1,000 tensors of 1,024 elements", lambda: [(1024,)] * 1000),
}
TORCH_IMPLS = {
    "for-loop": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}
STREAM_ELEMENTS = 16 * 1024 * 1024  # two 64 MiB float32 buffers: far beyond the caches


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimizers",
        default=",".join(OPTIMIZERS),
        help=f"comma-separated, from: {', '.join(OPTIMIZERS)} (default: all)",
    )
    parser.add_argument(
        "--layouts",
        default=",".join(LAYOUTS),
        help=f"comma-separated, from: {', '.join(LAYOUTS)} (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed steps each (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-torch", action="store_true", help="time optimlab only")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def _choose(text: str, table: dict) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in table]
    if unknown:
        raise SystemExit(f"optimlab bench: unknown {unknown}; choose from {', '.join(table)}")
    return names


def _implementations(case: Case, params: list[torch.Tensor], with_torch: bool) -> dict:
    impls = {"optimlab": getattr(optimlab, case.cls)(params, **case.kwargs)}
    if not with_torch:
        return impls
    for name, flags in TORCH_IMPLS.items():
        try:
            opt = getattr(torch.optim, case.cls)(params, **case.kwargs, **flags)
            opt.step()  # torch refuses some combinations only at the first step
        except (RuntimeError, ValueError, TypeError):
            continue  # no CPU fused kernel for this optimizer in this torch
        impls[f"torch {name}"] = opt
    return impls


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side logs to fd 2; keep the table clean."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocated_bytes(step: Callable[[], Any]) -> int:
    """Bytes allocated (not net) by one call of ``step``, from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return sum(max(event.self_cpu_memory_usage, 0) for event in prof.events())


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_one(opt_name: str, layout: str, repeats: int, warmup: int, with_torch: bool) -> dict:
    """One row: every implementation and the streaming add_, interleaved round-robin."""
    case = OPTIMIZERS[opt_name]
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in LAYOUTS[layout][1]():
        param = torch.empty(shape).uniform_(-0.1, 0.1, generator=gen).requires_grad_()
        param.grad = torch.empty(shape).uniform_(-1e-3, 1e-3, generator=gen)
        params.append(param)
    impls = _implementations(case, params, with_torch)
    for opt in impls.values():
        for _ in range(warmup):
            opt.step()
    allocated = {name: allocated_bytes(opt.step) for name, opt in impls.items()}
    a, b = torch.ones(STREAM_ELEMENTS), torch.full((STREAM_ELEMENTS,), 1e-9)
    contenders = {name: opt.step for name, opt in impls.items()}
    contenders["add_"] = lambda: a.add_(b)
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
            samples[name].append(_time(contenders[name]))
    median = {name: statistics.median(times) for name, times in samples.items()}
    numel = sum(p.numel() for p in params)
    bandwidth = 12 * STREAM_ELEMENTS / median.pop("add_")
    ours = median["optimlab"]
    torch_times = {name: t for name, t in median.items() if name != "optimlab"}
    best = min(torch_times, key=torch_times.get) if torch_times else None
    limit = case.bytes_per_param * numel / bandwidth
    return {
        "optimizer": opt_name,
        "layout": layout,
        "params": numel,
        "tensors": len(params),
        "seconds": median,
        "torch_best": best,
        "speedup_vs_torch_best": torch_times[best] / ours if best else None,
        "bandwidth_gbs": bandwidth / 1e9,
        "bytes_per_param": case.bytes_per_param,
        "limit_seconds": limit,
        "share_of_limit": limit / ours,
        "allocated_bytes_per_step": allocated,
    }


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.2f}"


def _meta(threads: int) -> dict:
    from .kernels import cpu

    isa = cpu._optim.isa() if cpu.AVAILABLE else "not built: " + cpu.UNAVAILABLE
    return {"torch": torch.__version__, "threads": threads, "kernels": isa}


def table(meta: dict, rows: list[dict]) -> str:
    head = (
        f"optimlab bench: torch {meta['torch']}, {meta['threads']} threads, "
        f"kernels {meta['kernels']}; medians of {meta['repeats']} interleaved steps"
    )
    cols = ["optimizer", "layout", "optimlab ms", "torch for-loop", "torch foreach",
            "torch fused", "vs torch best", "of bw limit", "add_ GB/s"]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        s = row["seconds"]
        speedup = row["speedup_vs_torch_best"]
        cells = [
            row["optimizer"], row["layout"], _ms(s["optimlab"]),
            _ms(s.get("torch for-loop")), _ms(s.get("torch foreach")), _ms(s.get("torch fused")),
            "—" if speedup is None else f"{speedup:.2f}x",
            f"{100 * row['share_of_limit']:.0f} %", f"{row['bandwidth_gbs']:.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    ours = {row["allocated_bytes_per_step"]["optimlab"] for row in rows}
    lines += [
        "",
        "Layouts: " + "; ".join(f"{k}: {v[0]}" for k, v in LAYOUTS.items()) + ".",
        "Bandwidth limit: bytes per param (SGD 12, momentum/Nesterov/Adagrad/RMSprop 20, "
        "RMSprop+momentum/Adam/AdamW/NAdam 28) / the add_ bandwidth of that row.",
        "Bytes allocated by one step after the first, optimlab: "
        + ", ".join(f"{b} B" for b in sorted(ours))
        + f" (all {len(rows)} rows).",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    optimizers = _choose(args.optimizers, OPTIMIZERS)
    layouts = _choose(args.layouts, LAYOUTS)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {**_meta(torch.get_num_threads()), "repeats": args.repeats}
    rows = []
    try:
        with torch.no_grad():
            for layout in layouts:
                for name in optimizers:
                    row = bench_one(name, layout, args.repeats, args.warmup, not args.no_torch)
                    rows.append(row)
                    if not args.json:
                        print(f"  {name} / {layout} done", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))
    else:
        print(table(meta, rows))
    return 0
