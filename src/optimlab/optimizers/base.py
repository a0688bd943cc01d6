"""What every optimlab optimizer shares.

Each optimizer subclasses :class:`torch.optim.Optimizer`, so ``param_groups``,
``add_param_group``, ``zero_grad``, step hooks, ``state_dict``/``load_state_dict``
and deepcopy are torch's own.  A subclass adds four small pieces:

``Hyper``
    a NamedTuple whose fields are the param-group keys the math reads; built
    once per group per step and handed to every backend, so hyperparameters
    travel as one typed value instead of a dozen keyword arguments.
``_validate(group)``
    raises ``ValueError`` naming the argument and the bad value.  It runs on the
    constructor's arguments *and* on every param group, where torch checks only
    the former (``SGD([{"params": ps, "lr": -1}])`` is accepted by torch).
``_new_state(param, group)``
    the state a parameter gets before its first update, under torch's keys.
``_update(param, grad, state, hyper)``
    the reference math for one tensor: plain torch ops in the order torch's
    single-tensor ("for-loop") implementation uses them, so the result is
    bitwise equal to ``torch.optim`` on CPU, and written to read like the
    lecture's pseudo-code.  It is the oracle for every faster backend and the
    path for ``differentiable=True``.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.optim.optimizer as _torch_optimizer
from torch import Tensor

from ..kernels import KernelCall
from . import arena, dispatch, precision

__all__ = [
    "Optimizer", "StateDict", "keep", "next_step", "scalar_dtype", "step_counter", "zeros_like",
]  # fmt: skip


def scalar_dtype() -> torch.dtype:
    """dtype of the ``step`` counters, as torch chooses it (float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def next_step(state: dict[str, Any]) -> float:
    """Advance a parameter's step counter (a CPU scalar tensor, as in torch) and return it."""
    state["step"] += 1
    return state["step"].item()


def keep(tensor: Tensor, differentiable: bool) -> Tensor:
    """``tensor`` as autograd may save it: a copy when the step is differentiable.

    State is updated in place every step; if autograd saved the state tensor
    itself, the next step's in-place update would invalidate the graph.
    """
    return tensor.clone() if differentiable else tensor


def _as_scalar(value: Any) -> Any:
    """A 1-element tensor hyperparameter as a 0-dim tensor (torch's ``_to_scalar``)."""
    if isinstance(value, Tensor) and value.dim() != 0:
        return value.squeeze()
    if isinstance(value, tuple):
        return tuple(_as_scalar(v) for v in value)
    return value


def _real(tensor: Any) -> Any:
    if isinstance(tensor, Tensor) and tensor.is_complex():
        return torch.view_as_real(tensor)
    return tensor


class StateDict(defaultdict):
    """``optimizer.state`` with a count of the writes to it, in ``version``.

    A kernel plan built from the state stays valid while the count does: replacing or
    removing a param's state dict (``opt.state[p] = {...}``) is seen at the next step.
    """

    version = 0

    def _changed(self) -> None:
        self.version += 1

    def __setitem__(self, key: Any, value: Any) -> None:
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self._changed()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> StateDict:
        self._changed()
        return super().__ior__(other)

    def clear(self) -> None:
        self._changed()
        super().clear()

    def pop(self, *args: Any) -> Any:
        self._changed()
        return super().pop(*args)

    def popitem(self) -> Any:
        self._changed()
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        super().update(*args, **kwargs)


# group keys that say how this instance runs, not what it computes: kept across loads
_OWN_CHOICES = ("fused", "foreach", "state_precision", "param_rounding")


class Optimizer(torch.optim.Optimizer):
    """Base class of optimlab's optimizers (see the module docstring)."""

    Hyper: ClassVar[type[NamedTuple]]
    # torch.amp.GradScaler.step hands this optimizer ``grad_scale`` and ``found_inf``
    # instead of unscaling the grads itself: the kernels unscale in their one pass.
    _step_supports_amp_scaling: ClassVar[bool] = True
    supports_sparse: ClassVar[bool] = False
    # torch's wording, e.g. "Adam does not support sparse gradients, please consider SparseAdam"
    sparse_hint: ClassVar[str] = ""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._check_group(defaults)
        if defaults.get("fused"):
            if defaults.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if defaults.get("foreach"):
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        super().__init__(params, defaults)
        self.state = StateDict(dict, self.state)

    # -- hooks for subclasses -------------------------------------------------

    def _validate(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_group(self, group: dict[str, Any]) -> None:
        """The subclass's rules and the storage options' (every optimizer has those)."""
        self._validate(group)
        precision.check_options(group)

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], hyper: Any) -> None:
        raise NotImplementedError

    def _has_state(self, group: dict[str, Any]) -> bool:
        return True

    def _kernel(self, hyper: Any) -> KernelCall | None:
        """This step as a fused kernel sees it; None: no kernel, the reference path."""
        return None

    def _has_kernel(self) -> bool:
        return type(self)._kernel is not Optimizer._kernel

    # -- torch.optim.Optimizer ------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict):
            self._check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        if self.param_groups[-1].get("fused"):
            dispatch.check_fused(self, self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Called by load_state_dict and unpickling.  A checkpoint written by
        # torch.optim (or an older optimlab) lacks optimlab's own group keys:
        # they take this optimizer's defaults.  Steps saved as plain numbers
        # become tensors, as torch does.
        super().__setstate__(state)
        self.state = StateDict(dict, self.state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        for param_state in self.state.values():
            for key in ("step", "mu_product"):
                if key in param_state and not torch.is_tensor(param_state[key]):
                    param_state[key] = torch.tensor(float(param_state[key]), dtype=scalar_dtype())
            # NAdam's mu_product is a counter like step, but torch's load_state_dict
            # casts it to the param dtype, so a float64 run would not resume exactly
            if "mu_product" in param_state:
                param_state["mu_product"] = param_state["mu_product"].to(scalar_dtype())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Which backend runs the step (fused, foreach) and how state is stored are this
        # instance's choice, not the checkpoint's: a torch checkpoint says fused=None, which
        # here means the kernels, and knows nothing of state_precision.
        chosen = [{key: group.get(key) for key in _OWN_CHOICES} for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, own in zip(self.param_groups, chosen, strict=True):
            group.update(own)
        self._restore_stored_dtypes(state_dict)
        for group in self.param_groups:
            slots = self._slots(group)
            for param in group["params"]:
                if self.state.get(param):
                    precision.convert(self.state[param], param, group, slots)

    def _restore_stored_dtypes(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict casts every state tensor of a floating param to the param's
        dtype: lossy or wrong for state kept in another precision on purpose (float32 state
        of a bfloat16 param, 8-bit codes and scales).  Take those from the checkpoint as
        saved; ``convert`` then brings everything into this optimizer's formats."""
        saved_ids = (i for g in state_dict["param_groups"] for i in g["params"])
        params = (p for g in self.param_groups for p in g["params"])
        for saved_id, param in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                loaded = self.state[param].get(key) if param in self.state else None
                if (isinstance(value, Tensor) and isinstance(loaded, Tensor)
                        and value.dtype != loaded.dtype
                        and key not in ("step", "mu_product")):  # fmt: skip
                    self.state[param][key] = value.to(device=loaded.device, copy=True)

    @staticmethod
    def profile_hook_step(func: Any) -> Any:
        """torch's step wrapper (step hooks, the profiler's label) where something listens;
        else ``step`` itself, whose fixed cost that wrapper would double (~8 us)."""
        hooked = torch.optim.Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def wrapper(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
            if (
                self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or _torch_optimizer._global_optimizer_pre_hooks
                or _torch_optimizer._global_optimizer_post_hooks
                or (not torch.compiler.is_compiling() and torch._C._autograd._profiler_enabled())
            ):  # (dynamo cannot trace the profiler's query: a graph break per step)
                return hooked(self, *args, **kwargs)
            return func(self, *args, **kwargs)

        return wrapper

    def hyper(self, group: dict[str, Any]) -> Any:
        """The group's hyperparameters as this optimizer's ``Hyper`` NamedTuple."""
        return self.Hyper(*(_as_scalar(group[field]) for field in self.Hyper._fields))

    def step(self, closure: Any = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): a closure that reevaluates the model and
                returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # set by torch.amp.GradScaler.step (see _step_supports_amp_scaling)
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if grad_scale is not None:
            self._refuse_fp16_grads()
        if found_inf is not None and found_inf.device.type == "cpu" and bool(found_inf):
            return loss  # inf/NaN in the scaled grads: skip, state and steps untouched
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            for index, group in enumerate(self.param_groups):
                self._step_group(index, group, grad_scale, found_inf)
        return loss

    def _step_group(
        self,
        index: int,
        group: dict[str, Any],
        grad_scale: Tensor | None = None,
        found_inf: Tensor | None = None,
    ) -> None:
        hyper, call = self._hyper_and_call(group)
        params = group["params"]
        if dispatch.routes(group, call is not None):
            params = dispatch.step_group(self, index, group, call, grad_scale, found_inf)
        params = [param for param in params if param.grad is not None]
        if not params or (found_inf is not None and bool(found_inf)):
            return  # (a GPU's found_inf is read on the host only if a tensor needs it)
        slots = call.slots if call is not None else ()
        position = {id(p): i for i, p in enumerate(group["params"])} if params else {}
        for param in params:  # what no backend took: per tensor
            if grad_scale is not None:
                param.grad.div_(grad_scale.to(param.grad.device))
            state = self._state_of(param, group)
            row_key = (index << 32) | position[id(param)]
            self._reference_step(param, param.grad, state, hyper, group, slots, row_key)

    def _hyper_and_call(self, group: dict[str, Any]) -> tuple[Any, KernelCall | None]:
        """The group's ``Hyper`` and this step as the backends see it (None: no kernel).

        Both are rebuilt only when a value changed (a schedule writes one each step), so a
        step's fixed cost is a comparison.  A tensor value counts by identity: filled in
        place, it is the same tensor, and the backends read it when they run.
        """
        signature = tuple(
            id(value) if isinstance(value, Tensor) else value
            for value in map(group.get, self._signature_keys)
        )
        cache = vars(self).setdefault("_calls", {})
        cached = cache.get(id(group))
        if cached is None or cached[0] != signature or cached[3] is not group:
            hyper = self.hyper(group)
            call = self._kernel(hyper)
            if call is not None:
                call = call._replace(
                    state_precision=group.get("state_precision"),
                    param_rounding=group.get("param_rounding", "nearest"),
                )
            cached = cache[id(group)] = (signature, hyper, call, group)
        hyper, call = cached[1], cached[2]
        if call is not None and precision.rounds_stochastically(group):
            group["rounding_step"] = group.get("rounding_step", 0) + 1
            call = call._replace(rounding=(group.get("rounding_seed", 0), group["rounding_step"]))
        return hyper, call

    @property
    def _signature_keys(self) -> tuple[str, ...]:
        return (*self.Hyper._fields, *_OWN_CHOICES, "rounding_seed")

    def _slots(self, group: dict[str, Any]) -> tuple:
        """The state keys of the update's tensor slots (what a state format applies to)."""
        call = self._kernel(self.hyper(group))
        return call.slots if call is not None else ()

    def _step_released(self, param: Tensor) -> None:
        """Step one param whose gradient is ready (optimlab.release_gradients): as ``step()``
        would, through a one-param view of its group (kept, so its kernel plan is too)."""
        released = vars(self).setdefault("_released", {})
        if id(param) not in released:
            places = [(i, group) for i, group in enumerate(self.param_groups)
                      if any(p is param for p in group["params"])]  # fmt: skip
            if not places:
                raise KeyError("the param is in none of this optimizer's groups")
            number = (1 << 20) + len(released)  # a plan, and a rounding key, of its own
            released[id(param)] = (places[0][1], {}, [param], number)
        group, view, params, number = released[id(param)]
        view.update(group)
        view["params"] = params
        self._step_group(number, view)
        if "rounding_step" in view:
            group["rounding_step"] = view["rounding_step"]

    def _refuse_fp16_grads(self) -> None:
        """As torch's GradScaler for every optimizer but a fused one: float16 params (hence
        grads) cannot be unscaled safely (their updates underflow), so it refuses them."""
        for group in self.param_groups:
            if group.get("fused") is True:
                continue  # torch's fused optimizers take float16 grads: so does fused=True
            for param in group["params"]:
                if param.grad is not None and param.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")

    # -- the hand-over to a backend ------------------------------------------

    def _prepare_state(
        self, params: list[Tensor], group: dict[str, Any], call: KernelCall, counters: str
    ) -> set[int]:
        """Create the state a backend needs for ``params`` (which have grads); return the ids
        of those whose lazy slots were just created (see ``KernelCall.lazy``).

        A slot missing from existing state (a damaged or foreign checkpoint) raises the
        ``KeyError`` the reference path would.  ``counters="param"``: the backend reads
        step counters on the param's device (as torch's fused optimizers keep them).
        """
        fresh: set[int] = set()
        if not self._stateful(group):
            return fresh
        for param in params:
            state = self._state_of(param, group)
            for key in filter(None, call.slots):
                if key not in state:
                    if not call.lazy:
                        raise KeyError(key)
                    state[key] = zeros_like(param)
                    fresh.add(id(param))
            for key in call.counters:
                if key not in state:
                    raise KeyError(key)
                if counters == "param" and state[key].device != param.device:
                    state[key] = state[key].to(param.device)
            precision.convert(state, param, group, call.slots)
        arena.pack([self.state[p] for p in group["params"] if self.state.get(p)])
        return fresh

    def _stateful(self, group: dict[str, Any]) -> bool:
        """Whether params keep state: the optimizer's own, or a Kahan compensation."""
        return self._has_state(group) or group.get("param_rounding") == "kahan"

    def _state_of(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if not self._stateful(group):
            return {}  # as torch: plain SGD keeps no per-parameter state at all
        state = self.state[param]
        if not state:
            state.update(self._new_state(param, group) if self._has_state(group) else {})
            precision.convert(state, param, group, self._slots(group))
        return state

    def _reference_step(
        self, param: Tensor, grad: Tensor, state: dict, hyper: Any,
        group: dict[str, Any] | None = None, slots: tuple = (), row_key: int = 0,
    ) -> None:  # fmt: skip
        if grad.is_sparse and not self.supports_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients{self.sparse_hint}"
            )
        if group is not None and (
            precision.state_format(param, group) is not None
            or precision.param_mode(param, group) != "nearest"
        ):
            precision.convert(state, param, group, slots)
            precision.reference_step(self._update, param, grad, state, hyper, group, slots,
                                     row_key)  # fmt: skip
            return
        if not param.is_complex():
            self._update(param, grad, state, hyper)
            return
        # The math is elementwise on (real, imag) pairs, as in torch: run it on
        # real views, then give any state the update created a complex view.
        view = {key: _real(value) for key, value in state.items()}
        self._update(_real(param), _real(grad), view, hyper)
        for key in view.keys() - state.keys():
            state[key] = torch.view_as_complex(view[key])


def zeros_like(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


def step_counter(value: float = 0.0) -> Tensor:
    """A fresh ``step`` entry: a CPU scalar tensor, as torch's for-loop path makes it."""
    return torch.tensor(value, dtype=scalar_dtype())
