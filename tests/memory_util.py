"""CPU memory as torch's profiler sees it, for the tests that compare what steps allocate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.profiler import ProfilerActivity, profile


def _events(run: Callable[[], Any]) -> list:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    return sorted(prof.events(), key=lambda event: event.time_range.start)


def peak_live_bytes(run: Callable[[], Any]) -> int:
    """The peak of memory allocated and not yet freed while ``run()`` runs.  (A block
    allocated before it and freed under it is missed by the profiler: free such blocks
    before measuring.)"""
    live = peak = 0
    for event in _events(run):
        live += event.cpu_memory_usage
        peak = max(peak, live)
    return peak


def allocated_bytes(run: Callable[[], Any]) -> int:
    """Bytes allocated (not net) while ``run()`` runs."""
    return sum(max(event.cpu_memory_usage, 0) for event in _events(run))
