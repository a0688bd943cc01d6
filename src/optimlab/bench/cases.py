"""What ``optimlab bench`` times: the optimizers (rows), the implementations of each
(columns) and the parameter layouts."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import optimlab

# bytes of one state element, which a step reads and writes once; 8-bit state keeps an
# fp32 absmax per block of 256 elements beside its bytes
STATE_BYTES = {"fp32": 4.0, "bf16": 2.0, "8bit": 1 + 4 / 256}


@dataclass(frozen=True)
class Case:
    """One row's optimizer, as optimlab, torch.optim and other libraries build it."""

    cls: str  # the class name in optimlab and in torch.optim
    kwargs: dict[str, Any]  # every implementation's constructor
    states: int  # state tensors per param (momentum's buffer 1, Adam's moments 2)
    precision: str = "fp32"  # how optimlab stores that state (STATE_BYTES)
    ours: dict[str, Any] = field(default_factory=dict)  # optimlab's constructor only
    in_torch: bool = True  # False: torch.optim has no equivalent to time
    peers: tuple[str, ...] = ()  # other libraries' implementations (PEERS)
    default: bool = True  # in the default selection

    @property
    def bytes_per_param(self) -> float:
        """What one fused pass must move: the param read and written and the grad read
        (12 bytes in fp32), and each state element read and written."""
        return 12 + self.states * 2 * STATE_BYTES[self.precision]


OPTIMIZERS: dict[str, Case] = {
    "SGD": Case("SGD", dict(lr=1e-3), 0),
    "momentum": Case("SGD", dict(lr=1e-3, momentum=0.9), 1),
    "Nesterov": Case("SGD", dict(lr=1e-3, momentum=0.9, nesterov=True), 1),
    "Adagrad": Case("Adagrad", dict(lr=1e-3), 1),
    "RMSprop": Case("RMSprop", dict(lr=1e-3), 1),
    "RMSprop+momentum": Case("RMSprop", dict(lr=1e-3, momentum=0.9), 2),
    "Adam": Case("Adam", dict(lr=1e-3), 2),
    "AdamW": Case("AdamW", dict(lr=1e-3), 2),
    "NAdam": Case("NAdam", dict(lr=1e-3), 2),
    # optimlab's stored state against torch's float32 state: the same update, fewer bytes
    "Adam-bf16": Case("Adam", dict(lr=1e-3), 2, "bf16", dict(state_precision="bf16")),
    "Adam-8bit": Case("Adam", dict(lr=1e-3), 2, "8bit", dict(state_precision="8bit")),
    # not by default: torchao's compiles for tens of seconds on CPU, and steps slowly there
    "AdamW-8bit": Case("AdamW", dict(lr=1e-3), 2, "8bit", dict(state_precision="8bit"),
                       peers=("torchao AdamW8bit", "bnb AdamW8bit"), default=False),
}  # fmt: skip
# other libraries' implementations: (module, class); each runs where its module imports
PEERS: dict[str, tuple[str, str]] = {
    "torchao AdamW8bit": ("torchao.optim", "AdamW8bit"),
    "bnb AdamW8bit": ("bitsandbytes.optim", "AdamW8bit"),
}
TORCH_IMPLS = {
    "for-loop": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
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
    "small-flat": ("the same after optimlab.flatten_parameters", lambda: [(1024,)] * 1000),
}


def make_params(layout: str, device: torch.device) -> list[torch.Tensor]:
    """The layout's params, with grads, the same values on every device."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in LAYOUTS[layout][1]():
        param = torch.empty(shape).uniform_(-0.1, 0.1, generator=gen).to(device)
        param.grad = torch.empty(shape).uniform_(-1e-3, 1e-3, generator=gen).to(device)
        params.append(param.requires_grad_())
    if layout.endswith("-flat"):  # params and grads end to end, as flatten_parameters makes them
        grads = [p.grad for p in params]
        module = torch.nn.ParameterList(params)
        (buffer,) = optimlab.flatten_parameters(module).buffers
        params = list(buffer.params)
        for param, grad, offset in zip(params, grads, buffer.offsets, strict=True):
            param.grad = buffer.grad[offset : offset + param.numel()].view_as(param)
            param.grad.copy_(grad)
    return params


def _makers(case: Case, params: list, with_others: bool) -> dict[str, Callable[[], Any]]:
    def make(get_class: Callable[[], Any], **kwargs: Any) -> Callable[[], Any]:
        return lambda: get_class()(params, **case.kwargs, **kwargs)  # imports when called

    makers = {"optimlab": make(lambda: getattr(optimlab, case.cls), **case.ours)}
    if with_others and case.in_torch:
        for name, flags in TORCH_IMPLS.items():
            makers[f"torch {name}"] = make(lambda: getattr(torch.optim, case.cls), **flags)
    for peer in case.peers if with_others else ():
        module, cls = PEERS[peer]
        makers[peer] = make(lambda m=module, c=cls: getattr(importlib.import_module(m), c))
    return makers


def build(case: Case, params: list, with_others: bool) -> tuple[dict, dict]:
    """Every implementation of ``case`` that runs here, stepped once (which creates its
    state): (the optimizers, why any that did not run failed)."""
    opts, missing = {}, {}
    for name, make in _makers(case, params, with_others).items():
        try:
            opt = make()
            opt.step()  # torch refuses some options only here
        except ImportError as error:
            missing[name] = f"not installed ({error.name})"
            continue
        except (RuntimeError, ValueError, TypeError) as error:
            if not name.startswith("torch "):  # torch lacking a fused kernel is the table's —
                missing[name] = f"{type(error).__name__}: {error}"
            continue
        opts[name] = opt
    return opts, missing
