"""Run a param group's step through the C kernels, with its pointer table cached.

Per group the backend builds a :class:`Plan` once: which params the kernels take
(the rest go back to the caller's reference path, chosen per tensor), and an int64
table with one row per tensor (data pointers of param, grad, state slots and scalar
counters, element count, flags).  Each later step costs one C call that
re-validates the table (``_optim.bind``: the param list, each param's data
pointer, each grad, at a few C-API calls per tensor) and one that runs the step
(``_optim.step``: one parallel region for the whole group).  A change the cheap
check sees (params replaced or re-pointed, new grads of another layout, a grad
appearing where no state exists yet, ``load_state_dict``, another kernel variant)
rebuilds the plan.

FSDP2's parameters are DTensors: the kernels step each rank's local shard (a plain
tensor; param, grad and state are sharded alike, and an elementwise update of the
shards is the update of the whole), never gathering a full parameter.

Params' and grads' pointers are re-read every step.  State tensors belong to the
optimizer and are not re-checked per step: the plan holds their storages, so a
state tensor replaced by hand (``opt.state[p]["exp_avg"] = t``, not detected until
the next re-plan, e.g. ``load_state_dict``) can never make a kernel write freed
memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import KernelCall
from . import _optim

try:  # public since torch 2.5; absent from builds without torch.distributed
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover
    DTensor = None

__all__ = ["DTYPES", "Plan", "step_group", "unsupported"]

# dtype -> the C code of its loads and stores (optim.c's DT_*)
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
KERNELS = {name: i for i, name in enumerate(_optim.KERNELS)}
FLAGS: dict[str, int] = _optim.FLAGS
HYPER_FIELDS: tuple[str, ...] = _optim.HYPER_FIELDS
_DENSE_FORMATS = (torch.channels_last, torch.channels_last_3d)
# bind() calls these descriptors directly on exactly these types (a subclass that overrides
# them, or any other type, goes through ordinary attribute lookup)
_optim.configure(
    tuple(t for t in (torch.Tensor, torch.nn.Parameter)
          if (t.data_ptr, t.grad, t.is_contiguous) == (torch.Tensor.data_ptr, torch.Tensor.grad,
                                                      torch.Tensor.is_contiguous)),
    torch.Tensor.data_ptr, torch.Tensor.grad, torch.Tensor.is_contiguous,
)  # fmt: skip


def _plain(tensor: Tensor) -> bool:
    """A tensor whose ``data_ptr()`` is its own memory: not a wrapper subclass (DTensor of
    FSDP2, FakeTensor, ...), whose elements live elsewhere or nowhere."""
    kind = type(tensor)
    return kind in (torch.Tensor, torch.nn.Parameter) or (
        kind.__torch_dispatch__ is torch.Tensor.__torch_dispatch__
    )


def _view(param: Tensor) -> Tensor | None:
    """The tensor whose memory the kernels update for ``param``: itself, or the local shard
    of a DTensor placed by Shard/Replicate only; None for other tensor subclasses."""
    if _plain(param):
        return param
    if (
        DTensor is not None
        and isinstance(param, DTensor)
        and all(isinstance(p, (Shard, Replicate)) for p in param.placements)
        and _plain(param._local_tensor)
    ):
        return param._local_tensor
    return None


def _view_like(tensor: Any, param: Tensor) -> Any:
    """``tensor`` (a grad, state or step counter of ``param``) as the kernels see it: itself
    when plain (the layout checks decide), the local shard of a DTensor distributed exactly
    as ``param`` is, None for anything else."""
    if not isinstance(tensor, Tensor) or _plain(tensor):
        return tensor
    if (
        DTensor is not None
        and isinstance(tensor, DTensor)
        and isinstance(param, DTensor)
        and tensor.placements == param.placements
        and tensor.device_mesh == param.device_mesh
    ):
        return tensor._local_tensor
    return None


def unsupported(param: Tensor) -> str:
    """Why the kernels cannot update ``param`` ('' when they can)."""
    view = _view(param)
    if view is None:
        return f"a parameter is a {type(param).__name__}, a tensor subclass"
    param = view
    if param.device.type != "cpu":
        return f"a parameter is on {param.device}, the kernels are CPU kernels"
    if param.is_complex():
        return "complex parameters go through the reference path"
    if param.dtype not in DTYPES:
        return f"a parameter has dtype {param.dtype}"
    if param.layout != torch.strided:
        return f"a parameter has layout {param.layout}"
    if not _dense(param):
        return "a parameter is not contiguous (nor dense in a channels-last order)"
    return ""


def _dense(tensor: Tensor) -> bool:
    """Whether the elements fill one block of memory, in an order the grads share."""
    if tensor.is_contiguous():
        return True
    dims = {4: _DENSE_FORMATS[0], 5: _DENSE_FORMATS[1]}
    return tensor.dim() in dims and tensor.is_contiguous(memory_format=dims[tensor.dim()])


def _same_order(tensor: Tensor, param: Tensor) -> bool:
    """Whether elementwise over memory pairs the same elements (what ``bind`` checks)."""
    if param.is_contiguous():
        return tensor.is_contiguous()
    return tensor.stride() == param.stride()


def _grad_problem(param: Tensor, grad: Tensor) -> str:
    if not _plain(grad):
        return f"a gradient is a {type(grad).__name__}, a tensor subclass"
    if grad.layout != torch.strided:
        return "a gradient is sparse"
    if grad.dtype != param.dtype or grad.device != param.device:
        return "a gradient's dtype or device differs from its parameter's"
    if not _same_order(grad, param):
        return "a gradient's memory layout differs from its parameter's"
    return ""


def _same_layout(tensor: Any, param: Tensor) -> bool:
    return (
        isinstance(tensor, Tensor)
        and _plain(tensor)
        and tensor.dtype == param.dtype
        and tensor.device == param.device
        and tensor.shape == param.shape
        and _same_order(tensor, param)
    )


def _counter_ok(counter: Any) -> bool:
    return (
        isinstance(counter, Tensor)
        and counter.device.type == "cpu"
        and counter.numel() == 1
        and counter.dtype in (torch.float32, torch.float64)
        and not counter.requires_grad
    )


class Plan:
    """The kernels' view of one param group, valid while ``fits`` and ``bind`` agree."""

    def __init__(self, opt: Any, group: dict[str, Any], call: KernelCall, strict: bool) -> None:
        self.group, self.key = group, call.key
        self.state, self.state_len = opt.state, -1
        owners = tuple(group["params"])
        views = tuple(_view(p) for p in owners)
        # a group of DTensors binds their local shards, whose grads step_group sets
        self.sharded = any(view is not param for param, view in zip(owners, views, strict=True))
        self.snapshot = views if self.sharded else owners
        self.kernel = KERNELS[call.name]
        self.variant = sum(1 << i for i, key in enumerate(call.slots) if key is not None)
        self.reference: list[Tensor] = []
        rows, params, self.owners, keep = [], [], [], []
        duplicated = len({id(p) for p in owners}) != len(owners)
        for param, view in zip(owners, views, strict=True):
            why = "a parameter appears twice in the group" if duplicated else unsupported(param)
            row = None if why else self._row(opt, group, call, param, keep)
            if isinstance(row, str):
                why, row = row, None
            if row is None:
                if strict:
                    raise RuntimeError(f"{type(opt).__name__}(fused=True) cannot run: {why}")
                self.reference.append(param)
                continue
            rows.append(row)
            params.append(view)
            self.owners.append(param)
        self.params = tuple(params)
        if self.sharded:
            for owner, view in zip(self.owners, self.params, strict=True):
                view.grad = _view_like(owner.grad, owner)
        # the grads the rows were checked with: bind re-checks only grads that change
        self.grads: list[Tensor | None] = [p.grad for p in params]
        self.table = torch.tensor(rows, dtype=torch.int64).reshape(-1, _optim.ROW_WIDTH)
        self.address = self.table.data_ptr()
        self.keep = keep
        self.state_len = len(opt.state)

    @staticmethod
    def _row(
        opt: Any, group: dict[str, Any], call: KernelCall, param: Tensor, keep: list
    ) -> list[int] | str:
        """The table row of ``param``, or why it must take the reference path."""
        owner, param = param, _view(param)
        grad, flags = owner.grad, DTYPES[param.dtype] << _optim.DTYPE_SHIFT
        if not param.is_contiguous():
            flags |= FLAGS["strided"]
        if grad is not None:
            grad = _view_like(grad, owner)
            if grad is None:
                return "a gradient is distributed differently from its parameter"
            why = _grad_problem(param, grad)
            if why:
                return why
            state = opt._state_of(owner, group)
            for key in call.slots:
                if key is not None and key not in state:
                    state[key] = torch.zeros_like(owner, memory_format=torch.preserve_format)
                    flags |= FLAGS["fresh"]
        else:
            state = opt.state.get(owner, {})
        state = {key: _view_like(value, owner) for key, value in state.items()}
        slots = [state.get(key) if key else None for key in call.slots]
        used = [state.get(key) for key in call.slots if key]
        counters = [state.get(key) for key in call.counters]
        if any(t is None for t in used + counters):
            if grad is not None:
                return "its state lacks a key the kernel needs"
            flags |= FLAGS["nostate"]  # no grad yet, no state yet: bind re-plans on its grad
            return [param.data_ptr(), 0, 0, 0, 0, 0, 0, 0, flags, 0]
        if not all(_same_layout(s, param) for s in used):
            return "a state tensor's dtype or layout differs from its parameter's"
        if not all(_counter_ok(c) for c in counters):
            return "a step counter is not a CPU float scalar tensor"
        ptrs = [s.data_ptr() if s is not None else 0 for s in slots]
        counter_ptrs = [c.data_ptr() for c in counters] + [0] * (2 - len(counters))
        for name, counter in zip(("step_f64", "mu_f64")[: len(counters)], counters, strict=True):
            if counter.dtype == torch.float64:
                flags |= FLAGS[name]
        # their storages, not just the tensors: a state tensor re-pointed with ``.data =``
        # must not free memory the table still points at
        keep.extend(t.untyped_storage() for t in slots + counters if t is not None)
        gptr = grad.data_ptr() if grad is not None else 0
        return [param.data_ptr(), gptr, *ptrs, param.numel(), *counter_ptrs, flags, 0]

    def fits(self, opt: Any, group: dict[str, Any], call: KernelCall) -> bool:
        """The cheap checks ``bind`` does not do: the group, the kernel, the state dict."""
        return (
            self.group is group
            and self.key == call.key
            and self.state is opt.state
            and self.state_len == len(opt.state)
        )

    def bind(self) -> int:
        params = self.group["params"]
        if self.sharded:
            params = [_view(p) for p in params]
            for owner, view in zip(self.owners, self.params, strict=True):
                view.grad = _view_like(owner.grad, owner)
        return _optim.bind(params, self.snapshot, self.params, self.grads, self.address)

    def release(self) -> None:
        """Drop the shards' grads bind set, so zero_grad frees the gradient memory."""
        if self.sharded:
            for view in self.params:
                view.grad = None


def _scalar_address(tensor: Tensor | None, keep: list) -> int:
    """Address of a float32 CPU copy of a GradScaler scalar (0 for None)."""
    if tensor is None:
        return 0
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        tensor = tensor.detach().to("cpu", torch.float32)
    keep.append(tensor)
    return tensor.data_ptr()


def step_group(
    opt: Any,
    index: int,
    group: dict[str, Any],
    call: KernelCall,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> list[Tensor]:
    """Step every param of ``group`` the kernels can take; return the others."""
    plans = vars(opt).setdefault("_kernel_plans", {})
    plan = plans.get(index)
    if plan is None or not plan.fits(opt, group, call) or plan.bind() != -1:
        plan = plans[index] = Plan(opt, group, call, strict=group.get("fused") is True)
        if plan.bind() != -1:
            raise RuntimeError("optimlab: a freshly built kernel plan failed its own check")
    if plan.params:
        keep: list[Tensor] = []
        _optim.step(
            plan.kernel,
            plan.variant,
            torch.get_num_threads(),
            plan.address,
            len(plan.params),
            tuple(float(call.hyper.get(name, 0.0)) for name in HYPER_FIELDS),
            sum(FLAGS[flag] for flag in call.flags),
            _scalar_address(grad_scale, keep),
            _scalar_address(found_inf, keep),
        )
    plan.release()
    return plan.reference
