"""How ``optimlab bench`` times: one clock interface, on CPU and on CUDA; the bandwidth
probe; rounds of interleaved steps, and what a row's rounds say."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

# Quiet, the add_ bandwidth here moves by well under this factor from round to round;
# a larger swing means other work took the memory bus meanwhile.
LOADED_SPREAD = 1.5
# A 1-minute load average above this when a run starts: another process held a core.
BUSY_LOAD = 1.0


class CpuClock:
    """Wall-clock time of a call; the bytes it allocates, from torch's profiler."""

    device = torch.device("cpu")

    def time(self, fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def allocated_bytes(self, fn: Callable[[], Any]) -> int:
        """Bytes allocated (not net) by one call of ``fn``."""
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
            fn()
        return sum(max(event.self_cpu_memory_usage, 0) for event in p.events())

    def name(self) -> str:
        return f"cpu, {torch.get_num_threads()} threads"


class CudaClock:
    """Time of a call from CUDA events recorded on an idle device, so the host's launch
    overhead counts as a training loop sees it; bytes from the caching allocator."""

    device = torch.device("cuda")

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, fn: Callable[[], Any]) -> float:
        torch.cuda.synchronize()
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3

    def allocated_bytes(self, fn: Callable[[], Any]) -> int:
        def total() -> int:
            torch.cuda.synchronize()
            return torch.cuda.memory_stats()["allocated_bytes.all.allocated"]

        before = total()
        fn()
        return total() - before

    def name(self) -> str:
        return torch.cuda.get_device_name()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side logs to fd 2; keep the output clean."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Stream:
    """The bandwidth probe: an in-place ``a.add_(b)`` on two 64 MiB float32 buffers, far
    beyond the caches, moving 12 bytes per element (it reads a and b and writes a: the
    pattern of an optimizer step, reads beside writes, on a GPU as on a CPU)."""

    ELEMENTS = 16 * 1024 * 1024
    BYTES = 12 * ELEMENTS

    def __init__(self, device: torch.device) -> None:
        self.a = torch.ones(self.ELEMENTS, device=device)
        self.b = torch.full((self.ELEMENTS,), 1e-9, device=device)

    def __call__(self) -> None:
        self.a.add_(self.b)


def measure(calls: dict[str, Callable[[], Any]], clock: Any, rounds: int, repeats: int) -> dict:
    """Each call's median time in each of ``rounds`` rounds of ``repeats`` passes; a pass
    calls each once, in an order that rotates from pass to pass."""
    names = list(calls)
    medians: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(rounds):
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(repeats):
            first, turn = turn % len(names), turn + 1
            for name in names[first:] + names[:first]:
                samples[name].append(clock.time(calls[name]))
        for name, times in samples.items():
            medians[name].append(statistics.median(times))
    return medians


def summarize(per_round: dict[str, list[float]], bytes_moved: float) -> dict:
    """A row's figures from its rounds' medians: optimlab's against the fastest other
    implementation, and against the time ``bytes_moved`` take at the add_ bandwidth."""
    per_round = dict(per_round)
    bandwidth = [Stream.BYTES / seconds for seconds in per_round.pop("add_")]
    seconds = {name: statistics.median(times) for name, times in per_round.items()}
    ours = per_round.get("optimlab")
    others = [name for name in seconds if name != "optimlab"]
    best = min(others, key=seconds.__getitem__) if ours and others else None
    ratios = [them / us for them, us in zip(per_round[best], ours, strict=True)] if best else []
    limits = [bytes_moved / bw for bw in bandwidth]
    shares = [limit / us for limit, us in zip(limits, ours, strict=True)] if ours else []
    return {
        "seconds": seconds,
        "seconds_per_round": per_round,
        "best_other": best,
        "speedup_vs_best": statistics.median(ratios) if ratios else None,
        "speedup_range": [min(ratios), max(ratios)] if ratios else None,
        "bandwidth_gbs": statistics.median(bandwidth) / 1e9,
        "bandwidth_spread": max(bandwidth) / min(bandwidth),
        "limit_seconds": statistics.median(limits),
        "share_of_limit": statistics.median(shares) if shares else None,
    }
