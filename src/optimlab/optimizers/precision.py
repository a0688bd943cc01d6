"""Low-precision state and parameters on the optimizer's side: options, state, reference step.

The formats themselves are specified in :mod:`optimlab.kernels.storage`.  This module
decides which format each tensor gets (``state_format``, ``param_mode``), keeps the
state in it (``convert``: after creation, after ``load_state_dict``, when the option
changes), and runs the reference path for stored formats (``reference_step``: load
into float32, the optimizer's own ``_update``, store back) -- the oracle every kernel
is tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..kernels import storage
from ..kernels.storage import NONNEGATIVE, PARAM_SLOT

__all__ = [
    "COMP", "check_options", "convert", "param_mode", "reference_step", "rounds_stochastically",
    "state_format", "absmax_key",
]  # fmt: skip

COMP = "kahan_comp"  # the Kahan compensation of a bfloat16 param


def absmax_key(key: str) -> str:
    """The state key of an 8-bit slot's per-block scales."""
    return f"{key}_absmax"


def check_options(group: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an invalid ``state_precision``, ``param_rounding`` or seed."""
    precision = group.get("state_precision")
    if precision not in storage.STATE_PRECISIONS:
        raise ValueError(
            f"Invalid state_precision: {precision!r} (state_precision must be one of None, "
            "'fp32', 'bf16', '8bit')"
        )
    rounding = group.get("param_rounding", "nearest")
    if rounding not in storage.PARAM_ROUNDINGS:
        raise ValueError(
            f"Invalid param_rounding: {rounding!r} (param_rounding must be one of "
            "'nearest', 'stochastic', 'kahan')"
        )
    seed = group.get("rounding_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"Invalid rounding_seed: {seed!r} (rounding_seed must be an int >= 0)")
    if (precision is not None or rounding != "nearest") and group.get("differentiable"):
        raise ValueError(
            "differentiable=True needs the state and params in their own dtypes "
            f"(state_precision={precision!r}, param_rounding={rounding!r})"
        )
    for param in group.get("params", ()):
        if rounding != "nearest" and isinstance(param, Tensor) and param.dtype == torch.float16:
            raise ValueError(
                f"Invalid param_rounding: {rounding!r} (float16 params round to nearest; "
                "'stochastic' and 'kahan' are for bfloat16 params)"
            )


def state_format(param: Tensor, group: dict[str, Any]) -> str | None:
    """The format of ``param``'s state in ``group`` (see ``storage.state_format``)."""
    return storage.state_format(param, group.get("state_precision"))


def param_mode(param: Tensor, group: dict[str, Any]) -> str:
    """How ``param`` is rounded on store in ``group`` (see ``storage.param_mode``)."""
    return storage.param_mode(param, group.get("param_rounding", "nearest"))


def rounds_stochastically(group: dict[str, Any]) -> bool:
    """Whether a step draws random bits (and so advances the group's ``rounding_step``)."""
    low = group.get("state_precision") in ("bf16", "8bit")
    return low or group.get("param_rounding") == "stochastic"


def stored_format(state: dict[str, Any], key: str, param: Tensor) -> str | None:
    """The format ``state[key]`` is in now (whatever the option says): "8bit", or its dtype."""
    value = state[key]
    if value.dtype == torch.uint8 and absmax_key(key) in state:
        return "8bit"
    return str(value.dtype)


def _target(fmt: str | None, param: Tensor) -> str:
    """``stored_format``'s name for format ``fmt``."""
    if fmt == "8bit":
        return fmt
    return str({None: param.dtype, "fp32": torch.float32, "bf16": torch.bfloat16}[fmt])


def load(state: dict[str, Any], key: str, param: Tensor) -> Tensor:
    """``state[key]`` as a new float32 tensor (the math's precision for stored formats)."""
    if stored_format(state, key, param) == "8bit":
        code = storage.UNSIGNED if key in NONNEGATIVE else storage.SIGNED
        return storage.dequantize(state[key], state[absmax_key(key)], code)
    return state[key].detach().float().clone()


def _noise(group: dict[str, Any], key: int, slot: int, numel: int, device: Any,
           bits: int = 16) -> Tensor:  # fmt: skip
    stream = storage.stream(group.get("rounding_seed", 0), group.get("rounding_step", 0),
                            key, slot)  # fmt: skip
    return storage.noise(stream, numel, bits, device)


def store(
    state: dict[str, Any], key: str, value: Tensor, fmt: str | None, param: Tensor,
    group: dict[str, Any], row_key: int, slot: int,
) -> None:  # fmt: skip
    """Write float32 ``value`` into ``state[key]`` in format ``fmt`` (creating the storage)."""
    if fmt == "8bit":
        code = storage.UNSIGNED if key in NONNEGATIVE else storage.SIGNED
        if key not in state or stored_format(state, key, param) != "8bit":
            state[key] = torch.empty_like(param, dtype=torch.uint8)
            state[absmax_key(key)] = param.new_empty(storage.absmax_shape(param.numel()),
                                                     dtype=torch.float32)  # fmt: skip
        noise = None  # converting a checkpoint (row_key < 0): to nearest
        if row_key >= 0:
            noise = _noise(group, row_key, slot, value.numel(), value.device, storage.NOISE_8BIT)
        storage.quantize(value, code, state[key], state[absmax_key(key)], noise)
        return
    dtype = {None: param.dtype, "fp32": torch.float32, "bf16": torch.bfloat16}[fmt]
    state.pop(absmax_key(key), None)
    if fmt == "bf16" and row_key >= 0:
        value = storage.round_bf16_stochastic(value, _noise(group, row_key, slot, value.numel(),
                                                            value.device))  # fmt: skip
    if key in state and state[key].dtype == dtype and state[key].shape == param.shape:
        state[key].copy_(value)
    else:
        state[key] = value.to(dtype).clone(memory_format=torch.preserve_format)


def convert(state: dict[str, Any], param: Tensor, group: dict[str, Any], slots: tuple) -> None:
    """Bring ``param``'s state into the format the group asks for (nearest rounding: a
    conversion is not a training step).  A no-op when it is in it already."""
    fmt = state_format(param, group)
    for key in slots:
        if (
            key is not None
            and key in state
            and stored_format(state, key, param) != _target(fmt, param)
        ):
            store(state, key, load(state, key, param), fmt, param, group, -1, 0)
    if param_mode(param, group) == "kahan":
        if COMP not in state:
            state[COMP] = torch.zeros_like(param, memory_format=torch.preserve_format)
    else:
        state.pop(COMP, None)


def reference_step(
    update: Callable[..., None], param: Tensor, grad: Tensor, state: dict[str, Any],
    hyper: Any, group: dict[str, Any], slots: tuple, row_key: int,
) -> None:  # fmt: skip
    """One reference update of a param whose state or rounding is a stored format: load
    everything into float32, run ``update`` (the optimizer's ``_update``), store back."""
    fmt, mode = state_format(param, group), param_mode(param, group)
    staged = dict(state)
    for key in slots:
        if key is not None and key in state:
            staged[key] = load(state, key, param)
    work = param.detach().float()
    if mode == "kahan":
        work = work + state[COMP].float()
    work = work.clone(memory_format=torch.preserve_format)
    update(work, grad.float(), staged, hyper)
    for slot, key in enumerate(slots):
        if key is not None and key in staged:  # (SGD's buffer may be born in this update)
            store(state, key, staged[key], fmt, param, group, row_key, slot)
    if mode == "stochastic":
        noise = _noise(group, row_key, PARAM_SLOT, param.numel(), param.device)
        param.copy_(storage.round_bf16_stochastic(work, noise).view(param.shape))
    elif mode == "kahan":
        rounded = work.to(param.dtype)
        state[COMP].copy_((work - rounded.float()).to(param.dtype))
        param.copy_(rounded)
    else:
        param.copy_(work)
