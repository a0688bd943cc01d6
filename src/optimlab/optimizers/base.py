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

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from ..kernels import KernelCall
from . import dispatch

__all__ = ["Optimizer", "check", "check_number", "keep", "next_step", "scalar_dtype"]


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


def check(ok: Any, what: str, value: Any, name: str, rule: str) -> None:
    """Raise ``ValueError("Invalid <what>: <value> (<name> must be <rule>)")`` unless ``ok``.

    The prefix is torch.optim's own message, so code matching torch's errors still matches.
    """
    if not ok:
        raise ValueError(f"Invalid {what}: {value} ({name} must be {rule})")


def check_number(name: str, value: Any, *, tensor_ok: bool = False) -> float:
    """The float value of hyperparameter ``name``; ``TypeError`` if it is not a number."""
    if isinstance(value, Tensor):
        if not tensor_ok:
            raise TypeError(f"{name} must be a float, got a Tensor: {value}")
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    return float(value)


def check_nonnegative(what: str, name: str, value: Any, *, tensor_ok: bool = False) -> None:
    number = check_number(name, value, tensor_ok=tensor_ok)
    check(0.0 <= number < math.inf, what, value, name, "a finite number >= 0")


def check_betas(betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        number = check_number(f"betas[{i}]", beta, tensor_ok=True)
        check(0.0 <= number < 1.0, f"beta parameter at index {i}", beta, f"betas[{i}]", "in [0, 1)")
    if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
        raise ValueError("betas must be either both floats or both Tensors")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be one of {', '.join(choices)})")


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
        self._validate(defaults)
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
            self._validate({**self.defaults, **param_group})
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
        # Which backend runs the step (fused, foreach) is this instance's choice, not the
        # checkpoint's: a torch checkpoint says fused=None, which here means the kernels.
        chosen = [(group.get("fused"), group.get("foreach")) for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fused, foreach) in zip(self.param_groups, chosen, strict=True):
            group["fused"], group["foreach"] = fused, foreach

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
        hyper = self.hyper(group)
        params = group["params"]
        if dispatch.routes(group, self._has_kernel()):
            call = self._kernel(hyper)
            params = dispatch.step_group(self, index, group, call, grad_scale, found_inf)
        params = [param for param in params if param.grad is not None]
        if not params or (found_inf is not None and bool(found_inf)):
            return  # (a GPU's found_inf is read on the host only if a tensor needs it)
        for param in params:  # what no backend took: per tensor
            if grad_scale is not None:
                param.grad.div_(grad_scale.to(param.grad.device))
            self._reference_step(param, param.grad, self._state_of(param, group), hyper)

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
        if not self._has_state(group):
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
        return fresh

    def _state_of(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if not self._has_state(group):
            return {}  # as torch: plain SGD keeps no per-parameter state at all
        state = self.state[param]
        if not state:
            state.update(self._new_state(param, group))
        return state

    def _reference_step(self, param: Tensor, grad: Tensor, state: dict, hyper: Any) -> None:
        if grad.is_sparse and not self.supports_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients{self.sparse_hint}"
            )
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
