"""Which backend steps which tensors of a param group, and the hand-over to it.

A group's params pass along a *route*: each backend on it takes the tensors it can step
and passes the rest on; what is left at the end takes the reference path, tensor by
tensor.  The route follows the group's ``fused`` and ``foreach`` as torch reads them:

=====================  =========================================================
``fused=None``         the fused kernels of each device (C on CPU, Triton on CUDA
(the default)          and ROCm), then ``torch._foreach_*`` ops on other devices,
                       then the reference path (CPU tensors the kernels cannot take)
``fused=True``         the fused kernels, or a ``RuntimeError`` saying why not
``fused=False``        foreach off the CPU (torch's default there), else reference
``foreach=True``       foreach on every device
``foreach=False``      no foreach backend
differentiable,        the reference path only
no kernel
under torch.compile    foreach: it traces into one graph, as torch.optim's does
=====================  =========================================================

The hand-over: before a backend first sees a tensor, the optimizer creates its state
(a backend never creates state nor calls back into the optimizer).  Plan-based backends
(C, Triton) cache a table per group and re-validate it every step (``kernels/plan.py``).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..kernels import KernelCall
from ..kernels import cpu as cpu_kernels
from ..kernels import foreach as foreach_kernels
from ..kernels import plan as kernel_plan

__all__ = ["Route", "cached_plan", "check_fused", "routes", "step_group"]


class Route(NamedTuple):
    """One backend on a group's route."""

    module: str  # the backend's module, imported when a tensor first reaches it
    devices: frozenset[str] | None  # the device types it takes here (None: any)
    fused: bool  # a fused-kernel backend (fused=True requires one for each tensor)
    skip_cpu: bool = False  # leave CPU tensors to the reference path (torch's CPU default)


CPU = Route("optimlab.kernels.cpu.backend", frozenset({"cpu"}), True)
TRITON = Route("optimlab.kernels.triton.backend", frozenset({"cuda"}), True)
FOREACH = Route("optimlab.kernels.foreach", None, False)
FOREACH_OFF_CPU = FOREACH._replace(skip_cpu=True)
OVERLAP = "a parameter's memory overlaps another parameter's (the kernels would race)"
# foreach is imported up front: it is torch.compile's route, and dynamo cannot trace an import
_BACKENDS: dict[str, Any] = {FOREACH.module: foreach_kernels}


def _backend(route: Route) -> Any:
    """The backend module of ``route``, or None where it cannot load (no triton, no build)."""
    if route is CPU and not cpu_kernels.AVAILABLE:
        return None
    if route.module not in _BACKENDS:
        try:
            _BACKENDS[route.module] = importlib.import_module(route.module)
        except ImportError:
            _BACKENDS[route.module] = None
    return _BACKENDS[route.module]


def unavailable(route: Route) -> str:
    """Why ``route``'s backend cannot load ('' when it can)."""
    if route is CPU:
        return cpu_kernels.UNAVAILABLE
    if route is TRITON:
        from ..kernels import triton as triton_kernels

        return triton_kernels.UNAVAILABLE
    return "" if _backend(route) is not None else f"{route.module} cannot be imported"


def routes(group: dict[str, Any], has_kernel: bool) -> tuple[Route, ...]:
    """The backends ``group`` passes along, in order (the table in the module docstring)."""
    if group.get("differentiable") or not has_kernel:
        return ()
    foreach = group.get("foreach")
    if torch.compiler.is_compiling():
        return () if foreach is False else (FOREACH,)
    if foreach:
        return (FOREACH,)
    fused = group.get("fused")
    chain = (CPU, TRITON) if fused is not False else ()
    if fused is not True and foreach is None:
        chain += (FOREACH_OFF_CPU,)
    return chain


def _takes(route: Route, param: Tensor) -> bool:
    """Whether ``param``'s device is one ``route`` steps."""
    local = kernel_plan.view(param)
    device = (local if local is not None else param).device.type
    if route.skip_cpu and device == "cpu":
        return False
    return route.devices is None or device in route.devices


def check_fused(opt: Any, group: dict[str, Any]) -> None:
    """``fused=True``: refuse at construction what no fused kernel can honour."""
    name = f"{type(opt).__name__}(fused=True)"
    if not opt._has_kernel():
        raise RuntimeError(f"{name}: this optimizer has no fused kernel")
    call = opt._kernel(opt.hyper(group))
    for param in group["params"]:
        route = next((r for r in (CPU, TRITON) if _takes(r, param)), None)
        if route is None:
            raise RuntimeError(
                f"{name} cannot run: a parameter is on {param.device}, where "
                "optimlab has no fused kernel (foreach=True runs there)"
            )
        backend = _backend(route)
        if backend is None:
            raise RuntimeError(f"{name}: {unavailable(route)}")
        why = backend.problem(param, opt.state.get(param), call)
        if why:
            raise RuntimeError(f"{name} cannot run: {why}")
    if kernel_plan.overlapping(group["params"]):
        raise RuntimeError(f"{name} cannot run: {OVERLAP}")


def step_group(
    opt: Any,
    index: int,
    group: dict[str, Any],
    call: KernelCall,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> list[Tensor]:
    """Step every param of ``group`` some backend on its route takes; return the others."""
    params = group["params"]
    for route in routes(group, True):
        if not params:
            break
        if not any(_takes(route, p) for p in params):
            continue  # (a CPU-only model never imports triton)
        backend = _backend(route)
        if backend is None:
            _missing(opt, route, group, params)
            continue
        if getattr(backend, "PLANNED", False):
            params = _step_planned(
                opt, route, backend, index, group, call, params, grad_scale, found_inf
            )
        else:
            params = _step_lists(opt, route, backend, group, call, params, grad_scale, found_inf)
    return params


def cached_plan(opt: Any, index: int = 0, backend: str = "cpu") -> Any:
    """The plan a backend ("cpu", "triton") keeps for group ``index`` (None: none yet)."""
    return vars(opt).get("_kernel_plans", {}).get((index, backend))


def _missing(opt: Any, route: Route, group: dict, params: list) -> None:
    """A backend that cannot load: fused=True raises; the CPU kernels' absence is said once."""
    if not any(_takes(route, p) for p in params):
        return
    if group.get("fused") and route.fused:
        raise RuntimeError(f"{type(opt).__name__}(fused=True): {unavailable(route)}")
    if route is CPU:
        cpu_kernels.warn_unavailable()


def _partition(
    opt: Any, route: Route, backend: Any, group: dict, call: KernelCall, params: list
) -> tuple[list[Tensor], list[Tensor]]:
    """(the params ``backend`` takes, the rest); fused=True raises for a refused param."""
    strict = group.get("fused") is True and route.fused
    duplicated = len({id(p) for p in params}) != len(params)
    clash = kernel_plan.overlapping(params) if route.fused else set()
    taken, rest = [], []
    for param in params:
        if not _takes(route, param):
            rest.append(param)
            continue
        if duplicated:
            why = "a parameter appears twice in the group"
        elif id(param) in clash:
            why = OVERLAP
        else:
            why = backend.problem(param, opt.state.get(param), call)
        if why and strict:
            raise RuntimeError(f"{type(opt).__name__}(fused=True) cannot run: {why}")
        (rest if why else taken).append(param)
    return taken, rest


def _step_planned(
    opt: Any,
    route: Route,
    backend: Any,
    index: int,
    group: dict,
    call: KernelCall,
    params: list,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> list[Tensor]:
    plans = vars(opt).setdefault("_kernel_plans", {})
    plan = plans.get((index, backend.NAME))
    if plan is None or not plan.fits(group, call, opt.state) or plan.bind() != -1:
        taken, rest = _partition(opt, route, backend, group, call, params)
        fresh = opt._prepare_state(
            [p for p in taken if p.grad is not None], group, call, backend.COUNTERS
        )
        plan = plans[(index, backend.NAME)] = backend.Plan(
            group, index, taken, opt.state, call, fresh
        )
        plan.rest = rest
        if plan.bind() != -1:
            raise RuntimeError("optimlab: a freshly built kernel plan failed its own check")
    try:
        backend.run(plan, call, grad_scale, found_inf)
    finally:
        plan.release()
    return plan.rest


def _step_lists(
    opt: Any,
    route: Route,
    backend: Any,
    group: dict,
    call: KernelCall,
    params: list,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> list[Tensor]:
    taken, rest = _partition(opt, route, backend, group, call, params)
    taken = [p for p in taken if p.grad is not None]
    # list backends step unconditionally: an inf/NaN in the scaled grads (found_inf on a
    # device; the step returned early for a CPU one) skips them, read on the host
    if not taken or (found_inf is not None and bool(found_inf)):
        return rest
    if torch.compiler.is_compiling() and not _prepared(opt, group, call, taken):
        _run_lists_eagerly(opt, backend, group, call, taken, grad_scale)
    else:
        _run_lists(opt, backend, group, call, taken, grad_scale)
    return rest


def _run_lists(
    opt: Any, backend: Any, group: dict, call: KernelCall, params: list, grad_scale: Any
) -> None:
    # traced, the state is ready (_prepared): preparing it would only check it again
    compiling = torch.compiler.is_compiling()
    fresh = set() if compiling else opt._prepare_state(params, group, call, backend.COUNTERS)
    states = [opt.state[p] if opt._has_state(group) else {} for p in params]
    backend.run(call, params, [p.grad for p in params], states, fresh, grad_scale)


def _prepared(opt: Any, group: dict, call: KernelCall, params: list) -> bool:
    """Whether every param's state already holds each slot and counter ``call`` reads."""
    if not opt._has_state(group):
        return True
    keys = [*filter(None, call.slots), *call.counters]
    return all(p in opt.state and all(k in opt.state[p] for k in keys) for p in params)


# Under torch.compile, a step that creates state runs eagerly: dynamo cannot trace the
# creation (optimizer.state is a defaultdict, the state arena reads data pointers), and
# a graph traced around it would serve one step only.  From the next step on the state
# exists, and the whole step is one graph (torch's optimizers keep state creation out of
# their graphs too: dynamo runs their _init_group eagerly).  torch._disable_dynamo imports
# dynamo at the first call, not here: torch.compiler.disable would import it (and triton)
# with optimlab, ~4 s.
_run_lists_eagerly = torch._disable_dynamo(_run_lists)
