"""A param group as a table of rows, cached across steps and re-validated before each one.

A :class:`Plan` is built when a group's layout is first seen or has changed: one int64
row per tensor (``ROW_FIELDS``: data pointers of the param, its grad and its state slots,
the element count, the counters, flags).  Before every step ``bind`` checks everything the
kernels rely on, at ~70 ns per tensor through torch's C shim (:func:`use_shim`; ~0.35 us
through torch.Tensor's Python accessors where the shim cannot be used):

* the group still holds the same params, each at the data pointer in its row;
* each grad (re-read every step: ``zero_grad(set_to_none=True)`` makes new ones) has the
  param's dtype, shape and memory order; its pointer goes into the row;
* each state slot and counter is still the tensor the row was built from (the same object
  in ``optimizer.state[param]``, at the same data pointer).

Anything else makes ``bind`` name the row, and the optimizer builds a new plan (where an
unusable tensor goes to the reference path, or ``fused=True`` raises).  Between steps the
plan holds no gradient (``zero_grad`` frees them); it holds the params' and the state's
storages, so a tensor re-pointed behind its back can never leave a row pointing at freed
memory (a new storage cannot reuse an address that is still held).

FSDP2's parameters are DTensors: a plan steps each rank's local shard (a plain tensor;
param, grad and state are sharded alike, and the elementwise update of the shards is the
update of the whole), never gathering a full parameter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import ROW_FIELDS, KernelCall, storage

try:
    from .cpu import _optim
except ImportError:  # a pure-Python install: bind runs in Python (the GPU backend's case)
    _optim = None
# the count of references to a storage (c10's use_count), from its address; private to torch,
# so a build without it skips the check it serves (Plan._repointed)
_use_count = getattr(torch._C, "_storage_Use_Count", None)

__all__ = ["DTYPES", "Plan", "problem", "use_shim", "view"]

# dtype -> the code of its loads and stores in the kernels (cpu/optim.h's DT_*)
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
ROW = {name: i for i, name in enumerate(ROW_FIELDS)}
# Row flags (cpu/optim.h): bits 0-7 are the call's options, these are the row's own.
ACTIVE, FRESH, NOSTATE, STRIDED, STEP_F64, MU_F64 = (1 << b for b in range(8, 14))
DTYPE_SHIFT = 16
# how a row is stored (cpu/optim.h): the state format, which 8-bit slots are unsigned, the
# param's rounding
STATE_SHIFT, UNSIGNED_SHIFT, ROUNDING_SHIFT = 20, 22, 25
STATE_FORMATS = {None: 0, "fp32": 1, "bf16": 2, "8bit": 3}
ROUNDINGS = {name: i for i, name in enumerate(storage.PARAM_ROUNDINGS)}
COMP = "kahan_comp"  # (optimizers/precision.py) a Kahan-compensated param's compensation
# the grads bind reads with torch.Tensor's own accessors; any other type takes the reference path
GRAD_TYPES = (torch.Tensor, torch.nn.Parameter)
if _optim is not None:  # bind calls these descriptors directly on exactly these types
    _ACCESSORS = ("data_ptr", "grad", "is_contiguous", "dtype", "shape")
    _optim.configure(
        tuple(t for t in GRAD_TYPES
              if all(getattr(t, a) is getattr(torch.Tensor, a) for a in _ACCESSORS)),
        *(getattr(torch.Tensor, a) for a in _ACCESSORS),
    )  # fmt: skip
_DENSE_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
_SHIM = ("get_data_ptr", "get_dim", "get_sizes", "get_dtype", "get_device_type", "is_contiguous")


def use_shim(enable: bool = True) -> bool:
    """Let ``bind`` read tensors through torch's C shim (cpu/module.c says why and how it
    checks that it may); whether it does.  ``use_shim(False)``: through the accessors."""
    if _optim is None or not enable:
        return _optim is not None and _optim.use_shim(None)
    import ctypes

    lib = next(iter(Path(torch.__file__).parent.glob("lib/*torch_cpu.*")), None)
    try:
        lib = ctypes.CDLL(str(lib))  # loaded already: this finds it, maps nothing new
        functions = [getattr(lib, f"aoti_torch_{name}") for name in _SHIM]
        code = {dtype: getattr(lib, f"aoti_torch_dtype_{str(dtype)[6:]}")() for dtype in DTYPES}
        cpu = lib.aoti_torch_device_type_cpu()
    except (OSError, AttributeError, TypeError):  # no libtorch_cpu, or a torch without the shim
        return _optim.use_shim(None)
    probes = (
        torch.zeros(3, 4), torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.bfloat16)),
        torch.zeros(4, 6, dtype=torch.float64)[:, 1:3], torch.zeros(()), torch.zeros(0, 5),
        torch.zeros(5, dtype=torch.float16)[2:],
    )  # fmt: skip
    return _optim.use_shim(
        tuple(ctypes.cast(f, ctypes.c_void_p).value or 0 for f in functions),
        tuple(code.values()),
        cpu,
        tuple(
            (t, t._cdata, (t.data_ptr(), code[t.dtype], cpu, t.dim(), tuple(t.shape),
                           t.is_contiguous()))
            for t in probes
        ),
    )  # fmt: skip


use_shim()


def _plain(tensor: Tensor) -> bool:
    """A tensor whose ``data_ptr()`` is its own memory: not a wrapper subclass (DTensor of
    FSDP2, FakeTensor, ...), whose elements live elsewhere or nowhere."""
    kind = type(tensor)
    return kind in (torch.Tensor, torch.nn.Parameter) or (
        kind.__torch_dispatch__ is torch.Tensor.__torch_dispatch__
    )


def _dtensor() -> tuple | None:
    """(DTensor, Replicate, Shard), or None while torch.distributed.tensor is not imported --
    then no tensor is a DTensor (importing it here would pull in torch._dynamo: ~1 s)."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else (module.DTensor, module.Replicate, module.Shard)


def view(param: Tensor) -> Tensor | None:
    """The tensor whose memory the kernels update for ``param``: itself, or the local shard
    of a DTensor placed by Shard/Replicate only; None for other tensor subclasses."""
    if _plain(param):
        return param
    types = _dtensor()
    if (
        types is not None
        and isinstance(param, types[0])
        and all(isinstance(p, types[1:]) for p in param.placements)
        and _plain(param._local_tensor)
    ):
        return param._local_tensor
    return None


def view_like(tensor: Any, param: Tensor) -> Any:
    """``tensor`` (a grad, state or step counter of ``param``) as the kernels see it: itself
    when plain (the layout checks decide), the local shard of a DTensor distributed exactly
    as ``param`` is, None for anything else."""
    if not isinstance(tensor, Tensor) or _plain(tensor):
        return tensor
    types = _dtensor()
    if (
        types is not None
        and isinstance(tensor, types[0])
        and isinstance(param, types[0])
        and tensor.placements == param.placements
        and tensor.device_mesh == param.device_mesh
    ):
        return tensor._local_tensor
    return None


def _dense(tensor: Tensor) -> bool:
    """Whether the elements fill one block of memory, in an order the grads share."""
    if tensor.is_contiguous():
        return True
    fmt = _DENSE_FORMATS.get(tensor.dim())
    return fmt is not None and tensor.is_contiguous(memory_format=fmt)


def _same_layout(tensor: Any, param: Tensor) -> bool:
    """Whether elementwise over memory pairs ``tensor``'s elements with ``param``'s."""
    return (
        isinstance(tensor, Tensor)
        and _plain(tensor)
        and tensor.dtype == param.dtype
        and tensor.device == param.device
        and tensor.shape == param.shape
        and (tensor.is_contiguous() if param.is_contiguous() else tensor.stride() == param.stride())
    )


def _mismatch(tensor: Tensor, param: Tensor) -> str:
    """How ``tensor`` (a grad) fails to pair with ``param`` elementwise ('' if it does not)."""
    if tensor.dtype != param.dtype or tensor.device != param.device:
        return (
            f"dtype or device ({tensor.dtype}, {tensor.device}) differs from its "
            f"parameter's ({param.dtype}, {param.device})"
        )
    if tensor.shape != param.shape:
        return f"shape {tuple(tensor.shape)} differs from its parameter's {tuple(param.shape)}"
    if not _same_layout(tensor, param):
        return "memory layout differs from its parameter's"
    return ""


def _same_shape(tensor: Any, param: Tensor) -> bool:
    """Elementwise-pairable but of any dtype: a state tensor in a stored format."""
    return (
        isinstance(tensor, Tensor)
        and _plain(tensor)
        and tensor.device == param.device
        and tensor.shape == param.shape
        and (tensor.is_contiguous() if param.is_contiguous() else tensor.stride() == param.stride())
    )


def _counter_ok(counter: Any, device: torch.device) -> bool:
    return (
        isinstance(counter, Tensor)
        and _plain(counter)
        and counter.device == device
        and counter.numel() == 1
        and counter.dtype in (torch.float32, torch.float64)
        and not counter.requires_grad
    )


def problem(
    param: Tensor,
    state: Mapping[str, Any] | None,
    call: KernelCall,
    counter_device: Any,
    formats: bool = False,
) -> str:
    """Why a kernel cannot step ``param`` with its grad and existing state ('' if it can).

    Missing state is no problem (the optimizer creates it); state that exists must have
    the param's layout.  ``counter_device`` is where the backend reads counters (None: on
    the param's device); ``formats``: whether the backend stores state and params in the
    formats of ``storage`` (else it takes only params whose state is in their own dtype).
    """
    local = view(param)
    if local is None:
        return f"a parameter is a {type(param).__name__}, a tensor subclass"
    if local.is_complex():
        return "complex parameters go through the reference path"
    if local.dtype not in DTYPES:
        return f"a parameter has dtype {local.dtype}"
    if local.layout != torch.strided:
        return f"a parameter has layout {local.layout}"
    if not _dense(local):
        return "a parameter is not contiguous (nor dense in a channels-last order)"
    if param.grad is not None:
        grad = view_like(param.grad, param)
        if grad is None:
            return "a gradient is distributed differently from its parameter"
        if type(grad) not in GRAD_TYPES:
            return f"a gradient is a {type(grad).__name__}, a tensor subclass"
        if grad.layout != torch.strided:
            return "a gradient is sparse"
        why = _mismatch(grad, local)
        if why:
            return f"a gradient's {why}"
    # (the param's own format: a DTensor's state keeps its dtype, whatever its shard's is)
    native = storage.state_format(param, call.state_precision) is None
    rounding = storage.param_mode(param, call.param_rounding)
    if not formats and not (native and rounding == "nearest"):
        return (
            f"state_precision={call.state_precision!r}, param_rounding="
            f"{call.param_rounding!r}: this backend stores state in the param's dtype"
        )
    for key in filter(None, call.slots):
        if not state or key not in state:
            continue  # (the optimizer creates it, in the group's format)
        value = view_like(state[key], param)
        # a stored format is converted by the optimizer; a native one must be the param's
        if not (_same_layout(value, local) if native else _same_shape(value, local)):
            return f"the state tensor {key!r} has another dtype or layout than its parameter"
    device = counter_device or local.device
    for key in call.counters:
        if state and key in state and not _counter_ok(view_like(state[key], param), device):
            return f"the counter {key!r} is not a float scalar tensor on {device}"
    return ""


def overlapping(params: Iterable[Tensor]) -> set[int]:
    """The ids of params whose memory overlaps another's: stepped in parallel they would race."""
    spans = []
    for param in params:
        local = view(param)
        if local is not None and local.numel():
            start = local.data_ptr()
            spans.append((start, start + local.numel() * local.element_size(), id(param)))
    spans.sort()
    clash: set[int] = set()
    reach, owner = -1, None
    for start, end, ident in spans:
        if start < reach:
            clash.update((ident, owner))
        if end > reach:
            reach, owner = end, ident
    return clash


class Plan:
    """A param group's tensors as the kernels see them; valid while ``bind`` agrees.

    ``taken`` are the params this plan steps (the optimizer has created the state of every
    one that has a grad); ``fresh`` those whose lazy slots were just created.
    """

    def __init__(
        self,
        group: dict[str, Any],
        key: int,
        taken: list[Tensor],
        state: Mapping[Tensor, dict],
        call: KernelCall,
        fresh: set[int],
    ) -> None:
        self.group, self.call_key, self.state = group, call.key, state
        self.snapshot = tuple(group["params"])
        self.owners = tuple(taken)
        self.params = tuple(view(p) for p in taken)
        self.sharded = any(v is not p for p, v in zip(self.owners, self.params, strict=True))
        self.variant = sum(1 << i for i, slot in enumerate(call.slots) if slot is not None)
        self.keep: list[Any] = []  # storages the rows point at (see the module docstring)
        rows, self.meta = [], []
        # a row's stochastic-rounding key: the group, and the param's place in it
        position = {id(p): i for i, p in enumerate(self.snapshot)}
        for owner, local in zip(self.owners, self.params, strict=True):
            row, meta = self._row(owner, local, state.get(owner), call, id(owner) in fresh)
            row[ROW["key"]] = (key << 32) | position[id(owner)]
            rows.append(row)
            self.meta.append(meta)
        self.meta = tuple(self.meta)
        self.table = torch.tensor(rows, dtype=torch.int64).reshape(-1, len(ROW_FIELDS))
        self.address = self.table.data_ptr()
        # where the C kernels join rows that continue each other in memory (optim.c's
        # coalesce): made once with the table, so a step allocates nothing
        self.scratch = torch.empty_like(self.table)
        self.scratch_address = self.scratch.data_ptr()
        self.version = state.version
        # the distinct storages of the state slots, scales and compensations (see _repointed)
        distinct = {}
        for meta in self.meta:
            for key, _, tensor, _ in meta[6]:
                if key not in call.counters:
                    held = tensor.untyped_storage()
                    distinct.setdefault(held._cdata, held)
        self.storages = list(distinct.values())
        self.counts: list | None = None
        self.runs = 0  # of the last step: rows that continue each other in memory run as one

    def _row(
        self, owner: Tensor, local: Tensor, state: dict | None, call: KernelCall, fresh: bool
    ) -> tuple[list[int], tuple]:
        """The row of one tensor, and what ``bind`` re-checks of it: ``(owner, local, shape,
        dtype, strides or None when contiguous, state dict or None, ((key, value, tensor,
        column), ...) for each state slot and counter)``: ``value`` is ``state[key]`` and
        ``tensor`` the memory the row points at (they differ for DTensors)."""
        row = [0] * len(ROW_FIELDS)
        row[ROW["param"]], row[ROW["numel"]] = local.data_ptr(), local.numel()
        flags = DTYPES[local.dtype] << DTYPE_SHIFT
        strides = None if local.is_contiguous() else local.stride()
        if strides is not None:
            flags |= STRIDED
        self.keep.append(local.untyped_storage())
        fmt = storage.state_format(owner, call.state_precision)
        rounding = storage.param_mode(owner, call.param_rounding)
        flags |= STATE_FORMATS[fmt] << STATE_SHIFT | ROUNDINGS[rounding] << ROUNDING_SHIFT
        wanted = [(key, f"slot{i}") for i, key in enumerate(call.slots) if key is not None]
        if fmt == "8bit":
            wanted += [(f"{key}_absmax", f"scale{i}") for i, key in enumerate(call.slots) if key]
            flags |= sum(1 << (UNSIGNED_SHIFT + i) for i, key in enumerate(call.slots)
                         if key in storage.NONNEGATIVE)  # fmt: skip
        if rounding == "kahan":
            wanted.append((COMP, "comp"))
        wanted += list(zip(call.counters, ("step", "mu_product"), strict=False))
        if wanted and (not state or any(key not in state for key, _ in wanted)):
            # no grad when planned, so no state yet: bind asks for a new plan when one appears
            row[ROW["flags"]] = flags | NOSTATE
            return row, (owner, local, local.shape, local.dtype, strides, None, ())
        checks = []
        for key, column in wanted:
            tensor = view_like(state[key], owner)  # a DTensor's local shard, else itself
            row[ROW[column]] = tensor.data_ptr()
            self.keep.append(tensor.untyped_storage())
            checks.append((key, state[key], tensor, ROW[column]))
            if column != "mu_product" and column != "step":
                continue
            if tensor.dtype == torch.float64:
                flags |= STEP_F64 if column == "step" else MU_F64
        row[ROW["flags"]] = flags | (FRESH if fresh else 0)
        return row, (owner, local, local.shape, local.dtype, strides, state or {}, tuple(checks))

    # -- per step --------------------------------------------------------------

    def fits(self, group: dict[str, Any], call: KernelCall, state: Mapping) -> bool:
        """The cheap checks ``bind`` does not do: the group, the update, the state mapping
        (whose ``version`` counts its writes: a param's state dict replaced, or removed)."""
        return (
            self.group is group
            and self.call_key == call.key
            and self.state is state
            and self.version == state.version
        )

    def bind(self) -> int:
        """-1 when the table is ready for a step; else the row (or -2: the group, -3: a state
        storage) that changed."""
        if self.sharded:  # the local shards' grads, set for the step and released after
            for owner, local in zip(self.owners, self.params, strict=True):
                local.grad = view_like(owner.grad, owner)
        params = self.group["params"]
        if _optim is not None:
            changed = _optim.bind(params, self.snapshot, self.meta, self.address)
        else:
            changed = _bind(params, self.snapshot, self.meta, self.table)
        return changed if changed != -1 else self._repointed()

    def _repointed(self) -> int:
        """-3 when a state tensor was re-pointed in place (``exp_avg.data = ...``), else -1.

        Checking each state tensor's pointer would double bind's cost; instead each storage
        the state lives in (one per kind, with the arena) is checked for the count of
        references to it, taken when the plan first bound: a view re-pointed away drops it.
        (Another view taken by hand raises it: one more plan, no harm.)"""
        if _use_count is None:
            return -1
        if self.counts is None:  # now: the plan this one replaced no longer holds refs
            self.counts = [(held, _use_count(held._cdata)) for held in self.storages]
        for held, count in self.counts:
            if _use_count(held._cdata) != count:
                return -3
        return -1

    def release(self) -> None:
        """Drop every gradient the step used: ``zero_grad`` must free their memory."""
        if self.sharded:
            for local in self.params:
                local.grad = None


def _bind(params: list, snapshot: tuple, meta: tuple, table: Tensor) -> int:
    """``bind`` in Python: what ``_optim.bind`` (cpu/module.c) does, for installs without it."""
    if len(params) != len(snapshot) or any(
        a is not b for a, b in zip(params, snapshot, strict=True)
    ):
        return -2
    rows = table.tolist()
    for i, (_, local, shape, dtype, strides, expected, checks) in enumerate(meta):
        row = rows[i]
        if local.data_ptr() != row[ROW["param"]]:
            return i
        if expected is not None:
            for key, value, tensor, column in checks:
                if expected.get(key) is not value or tensor.data_ptr() != row[column]:
                    return i
        grad = local.grad
        row[ROW["flags"]] &= ~ACTIVE
        if grad is None:
            continue
        if (
            expected is None
            or type(grad) not in GRAD_TYPES
            or grad.dtype is not dtype
            or grad.shape != shape
            or not (grad.is_contiguous() if strides is None else grad.stride() == strides)
        ):
            return i
        row[ROW["grad"]] = grad.data_ptr()
        row[ROW["flags"]] |= ACTIVE
    table.copy_(torch.tensor(rows, dtype=torch.int64).reshape(table.shape))
    return -1
