"""Run a param group's step through the Triton kernels (:mod:`.driver`) over a plan's table.

The optimizer hands over a :class:`Plan` (built from tensors :func:`problem` accepted,
whose state it has created, with the step counters on the params' device) and the step as
a :class:`~optimlab.kernels.KernelCall`.  Per device its params live on, the plan keeps
what the kernels read there: a copy of its rows of the table, a chunk table per launch,
the rows' scalars, rounding streams and lazy-slot ("fresh") flags.  :func:`run` uploads
the rows when ``bind`` has changed them (new grad tensors), then launches ``prepare`` once
and ``step`` once per dtype and storage (state format and param rounding, as
kernels/storage.py specifies them).  Nothing waits for the device: ``found_inf``,
``grad_scale``, a tensor ``lr`` and the counters are read by the kernels, so a step can be
captured in a CUDA graph (keep the tensors it reads static, as for torch's
``capturable=True``), except one that rounds stochastically: its rounding step is a host
counter, which every replay would repeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import AVAILABLE, INTERPRET, UNAVAILABLE, unusable

if not AVAILABLE:  # dispatch reads an ImportError as "no Triton backend here"
    raise ImportError(UNAVAILABLE)
try:
    import triton
    import triton.language as tl
except Exception as error:  # installed, but it does not load here
    raise ImportError(unusable(f"triton cannot be imported ({error!r})")) from error

from .. import CALL_FLAGS, HYPER_FIELDS, KernelCall
from .. import plan as plans
from . import driver
from .updates import OPTIMIZERS, SCALARS

__all__ = ["COUNTERS", "DEVICES", "NAME", "PLANNED", "Plan", "problem", "run"]

NAME = "triton"
PLANNED = True  # a cached table per group (kernels/plan.py), re-validated every step
COUNTERS = "param"  # step counters on the params' device, as torch's fused optimizers keep them
# Triton's interpreter runs the kernels on the host: on CPU tensors (how the tests run
# without a GPU), never on CUDA ones, whose addresses in the table it cannot read
DEVICES = frozenset({"cpu"} if INTERPRET else {"cuda"})
FLAGS = {name: 1 << bit for bit, name in enumerate(CALL_FLAGS)}
# a row's dtype code (plan.DTYPES) -> (storage type, math type) in the kernels
TYPES = {
    plans.DTYPES[torch.float32]: (tl.float32, tl.float32),
    plans.DTYPES[torch.float64]: (tl.float64, tl.float64),
    plans.DTYPES[torch.bfloat16]: (tl.bfloat16, tl.float32),
    plans.DTYPES[torch.float16]: (tl.float16, tl.float32),
}
# a row's state format (plan.STATE_FORMATS) -> the storage type of its slots (None: the param's)
STATE_TYPES = {plans.STATE_FORMATS[fmt]: dtype for fmt, dtype in (
    (None, None), ("fp32", tl.float32), ("bf16", tl.bfloat16), ("8bit", tl.uint8))}  # fmt: skip
# hyperparameters the kernels can read from a tensor on the device: the argument that takes it
POINTERS = {"lr": "lr_ptr", "weight_decay": "wd_ptr"}
ARRAYS = [plans.ROW[name] for name in ("param", "grad", "slot0", "slot1", "slot2", "comp")]
# a row's storage: its flags from the dtype code up (dtype, state format, unsigned 8-bit
# slots, param rounding); the rows of one launch share it
STORAGE_BITS = 11
assert plans.ROUNDING_SHIFT + 2 == plans.DTYPE_SHIFT + STORAGE_BITS
# compile options of every launch: only the fmas the updates write are fused, so the
# rounding is the C kernels' (and the interpreter's, where the tests run)
LAUNCH = dict(enable_fp_fusion=False)


def problem(param: Tensor, state: Mapping[str, Any] | None, call: KernelCall) -> str:
    """Why the Triton kernels cannot step ``param`` ('' when they can)."""
    local = plans.view(param)
    if local is not None and local.device.type not in DEVICES:
        where = "the CPU under TRITON_INTERPRET=1" if INTERPRET else "CUDA devices"
        return f"a parameter is on {local.device}; the Triton kernels run on {where}"
    if call.name not in OPTIMIZERS:
        return f"the Triton kernels have no {call.name!r} update"
    return plans.problem(param, state, call, counter_device=None, formats=True)


@dataclass
class _Launch:
    """The ``step`` launch of one dtype and storage: its rows, and its chunks as (row, first
    element)."""

    storage: int  # the rows' flags >> DTYPE_SHIFT (see STORAGE_BITS)
    rows: Tensor  # indices of its rows
    chunks: Tensor  # the chunk table, on the device
    aligned: bool = False  # every array of its rows starts on 16 bytes: vector loads

    @property
    def code(self) -> int:
        """The dtype's code (plan.DTYPES)."""
        return self.storage & 15

    def constants(self) -> dict[str, Any]:
        """The compile-time constants of its ``step``: types, state format, rounding."""
        flags = self.storage << plans.DTYPE_SHIFT
        dtype, math = TYPES[self.code]
        state = (flags >> plans.STATE_SHIFT) & 3
        rounding = (flags >> plans.ROUNDING_SHIFT) & 3
        native = state == plans.STATE_FORMATS[None] and rounding == plans.ROUNDINGS["nearest"]
        return dict(
            DTYPE=dtype, MATH=math, HALF=native and dtype == tl.float16, STATE=state,
            STATE_DTYPE=STATE_TYPES[state] or dtype, UNSIGNED=(flags >> plans.UNSIGNED_SHIFT) & 7,
            ROUNDING=rounding,
        )  # fmt: skip


def _launches(rows: Tensor, device: torch.device) -> list[_Launch]:
    """One launch per dtype and storage among ``rows`` that has elements (empty tensors need
    none: their counters advance in ``prepare``)."""
    numel = rows[:, plans.ROW["numel"]]
    kinds = (rows[:, plans.ROW["flags"]] >> plans.DTYPE_SHIFT) & ((1 << STORAGE_BITS) - 1)
    launches = []
    for kind in sorted(set(kinds.tolist())):
        ids = (kinds == kind).nonzero().flatten()
        counts = (numel[ids] + driver.CHUNK - 1) // driver.CHUNK
        if int(counts.sum()) == 0:
            continue
        owner = torch.repeat_interleave(ids, counts)
        first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        start = (torch.arange(len(owner)) - first) * driver.CHUNK
        launches.append(_Launch(kind, ids, torch.stack([owner, start], dim=1).to(device)))
    return launches


class _Part:
    """The rows of a plan on one device, as the kernels read them there."""

    def __init__(self, device: torch.device, index: list[int], host: Tensor) -> None:
        self.device = device
        self.index = None if len(index) == len(host) else torch.tensor(index)
        rows = self._rows(host)
        self.table = rows.to(device)
        self.uploaded: Tensor | None = rows.clone()  # what self.table holds (None: unknown)
        fresh = (rows[:, plans.ROW["flags"]] & plans.FRESH) != 0
        self.fresh = fresh.to(device, torch.int32)  # lazy slots not stepped yet
        self.fresh_now = torch.zeros_like(self.fresh)  # ... at the step being run
        self.scalars = torch.empty(len(rows), len(SCALARS), dtype=torch.float64, device=device)
        streams = (len(rows), driver.NSTREAMS.value)  # uint32 bit patterns (torch: int32)
        self.streams = torch.zeros(streams, dtype=torch.int32, device=device)
        self.launches = _launches(rows, device)
        self.captured: list[Tensor] = []  # host rows that captured CUDA graphs copy from
        self._align(rows)

    def _rows(self, host: Tensor) -> Tensor:
        return host if self.index is None else host.index_select(0, self.index)

    def _align(self, rows: Tensor) -> None:
        for launch in self.launches:
            launch.aligned = bool((rows[launch.rows][:, ARRAYS] % 16 == 0).all())

    def upload(self, host: Tensor) -> None:
        """Bring the device's copy of the rows up to date (``bind`` rewrote the grads')."""
        rows = self._rows(host)
        if self.uploaded is not None and torch.equal(rows, self.uploaded):
            return  # the same grad tensors as last step: nothing to copy
        self._align(rows)
        if self.device.type == "cpu":
            self.table.copy_(rows)
            self.uploaded = rows.clone()
            return
        # pinned, so the copy is asynchronous; torch's pinned-memory cache keeps the block
        # until the copy has run
        staged = rows.pin_memory()
        self.table.copy_(staged, non_blocking=True)
        if torch.cuda.is_current_stream_capturing():
            self.captured.append(staged)  # every replay copies from it again
            self.uploaded = None  # the copy happens at replay, not now
        else:
            self.uploaded = rows.clone()


class Plan(plans.Plan):
    """:class:`optimlab.kernels.plan.Plan` with the rows' copies on their devices."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        by_device: dict[torch.device, list[int]] = {}
        for i, local in enumerate(self.params):
            by_device.setdefault(local.device, []).append(i)
        self.parts = [_Part(device, index, self.table) for device, index in by_device.items()]


def _scalar(tensor: Tensor | None, device: torch.device) -> Tensor | None:
    """A scalar tensor the kernels read on ``device`` (copied there without a host sync)."""
    if tensor is None:
        return None
    tensor = tensor.detach()
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)


def _hyper(call: KernelCall, device: torch.device) -> tuple[dict[str, float], dict]:
    """The call's hyperparameters as numbers, and the tensors the kernel reads instead."""
    numbers, tensors = {}, {}
    for name in HYPER_FIELDS:
        value = call.hyper.get(name, 0.0)
        if isinstance(value, Tensor):
            on_host = value.device.type == "cpu" and device.type != "cpu"
            if name in POINTERS and not on_host:
                tensors[POINTERS[name]] = _scalar(value, device)
                value = 0.0
            else:  # a CPU tensor for a GPU step: reading it costs no device sync
                value = value.item()
        numbers[name] = float(value)
    return numbers, tensors


def _on(device: torch.device) -> Any:
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _int32(value: int) -> int:
    """A 32-bit pattern as a signed int32 (the type Triton gives a small Python int)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _rounding(call: KernelCall) -> dict[str, Any]:
    """``prepare``'s arguments for the rounding streams: (seed, step) as 32-bit halves, and
    whether any row needs them."""
    seed, step = call.rounding
    streams = call.state_precision in ("bf16", "8bit") or call.param_rounding == "stochastic"
    if streams and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "a step with stochastic rounding cannot be captured in a CUDA graph: every "
            f"replay would round with the captured rounding step ({step})"
        )
    return dict(seed=_int32(seed), step_lo=_int32(step), step_hi=_int32(step >> 32),
                STREAMS=streams)  # fmt: skip


def run(plan: Plan, call: KernelCall, grad_scale: Tensor | None, found_inf: Tensor | None) -> None:
    """One step over the plan's active rows (``bind`` has just filled in their grads)."""
    if not plan.owners:
        return
    update, schedule, counters = OPTIMIZERS[call.name]
    flags = sum(FLAGS[flag] for flag in call.flags)
    rounding = _rounding(call)
    for part in plan.parts:
        numbers, tensors = _hyper(call, part.device)
        found, scale = _scalar(found_inf, part.device), _scalar(grad_scale, part.device)
        with _on(part.device):
            part.upload(plan.table)
            nrows = len(part.table)
            driver.prepare[(triton.cdiv(nrows, driver.ROWS),)](
                part.table, nrows, part.scalars, part.streams, part.fresh, part.fresh_now,
                found, tensors.get("lr_ptr"), tensors.get("wd_ptr"), **numbers, **rounding,
                SCHEDULE=schedule, COUNTERS=counters, FLAGS=flags, ROWS=driver.ROWS, **LAUNCH,
            )  # fmt: skip
            for launch in part.launches:
                driver.step[(len(launch.chunks),)](
                    part.table, launch.chunks, part.scalars, part.streams, part.fresh_now,
                    found, scale, UPDATE=update, FLAGS=flags, V=plan.variant,
                    **launch.constants(), ALIGNED=launch.aligned, CHUNK=driver.CHUNK,
                    BLOCK=driver.BLOCK, **LAUNCH,
                )  # fmt: skip
