"""Flat parameters and gradients: a module's tensors as views of one buffer per (device, dtype).

Real models hold hundreds of small parameter tensors, and an optimizer step pays per tensor.
:func:`flatten_parameters` copies a module's trainable parameters end to end, in the order of
``module.parameters()``, into one buffer per device and dtype, and makes each parameter a view
of it; each gradient becomes a view of a second buffer laid out the same way.  The
``Parameter`` objects stay the same, so optimizers built before or after, tied weights,
module hooks and ``state_dict`` keep working; an optimizer over ``model.parameters()`` then
meets params, grads and (where it allocates state in parameter order) state that lie end to
end in memory, which a fused kernel can walk as a few long rows.

Autograd accumulates into an existing ``.grad`` in place, so the gradient views survive
``zero_grad(set_to_none=False)`` untouched.  After ``zero_grad(set_to_none=True)`` (torch's
default) the next backward makes a fresh gradient tensor; a post-accumulate-grad hook on each
parameter copies it into its view and points ``p.grad`` back there.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["FlatBuffer", "FlatParameters", "flatten_parameters"]

# parameter -> weak reference to the FlatParameters that holds it; the parameter's own
# hook holds the handle, so flattening lasts as long as the parameters do
_OWNERS: WeakIdKeyDictionary = WeakIdKeyDictionary()


class FlatBuffer(NamedTuple):
    """The parameters of one device and dtype: their values and gradients, one buffer each.

    ``data[offsets[i]:offsets[i] + params[i].numel()]`` holds ``params[i]``; ``grad`` is laid
    out the same way.  Elements of ``grad`` whose parameter's ``.grad`` is None are stale.
    """

    data: Tensor
    grad: Tensor
    names: tuple[str, ...]
    params: tuple[torch.nn.Parameter, ...]
    offsets: tuple[int, ...]


class FlatParameters:
    """What :func:`flatten_parameters` did: the buffers, and which parameters live in them."""

    def __init__(self, module: torch.nn.Module, named: list[tuple[str, torch.nn.Parameter]]):
        self.names = tuple(name for name, _ in named)
        self.params = tuple(param for _, param in named)
        self._module = weakref.ref(module)
        self._warned = False
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, param in enumerate(self.params):
            by_kind.setdefault((param.device, param.dtype), []).append(i)
        self._places: list[tuple[FlatBuffer, int, Tensor]] = [None] * len(self.params)
        self.buffers = tuple(self._flatten(indices) for indices in by_kind.values())
        self._hooks = [
            param.register_post_accumulate_grad_hook(self._rehome(i))
            for i, param in enumerate(self.params)
        ]
        for param in self.params:
            _OWNERS[param] = weakref.ref(self)

    def _flatten(self, indices: list[int]) -> FlatBuffer:
        params = [self.params[i] for i in indices]
        offsets, total = [], 0
        for param in params:
            offsets.append(total)
            total += param.numel()
        data = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
        # zeros, not empty: a read of the whole buffer (a norm) never sees uninitialized memory
        grad = torch.zeros_like(data)
        buffer = FlatBuffer(
            data, grad, tuple(self.names[i] for i in indices), tuple(params), tuple(offsets)
        )
        with torch.no_grad():
            for i, param, offset in zip(indices, params, offsets, strict=True):
                # a dense param keeps its strides (channels-last stays channels-last)
                stride = torch.empty_like(param, device="meta").stride()
                value = data.as_strided(param.shape, stride, offset)
                grad_view = grad.as_strided(param.shape, stride, offset)
                value.copy_(param)
                param.data = value
                old = param.grad
                if old is not None and not old.is_sparse and not old.requires_grad:
                    grad_view.copy_(old)
                    param.grad = grad_view
                self._places[i] = (buffer, offset, grad_view)
        return buffer

    def _at_home(self, index: int) -> bool:
        """Whether parameter ``index`` still lives in its buffer (``.to()``, ``.half()``,
        ``load_state_dict(assign=True)`` and the like move it out)."""
        param = self.params[index]
        buffer, offset, _ = self._places[index]
        data = buffer.data
        return (
            param.dtype == data.dtype
            and param.device == data.device
            and param.data_ptr() == data.data_ptr() + offset * data.element_size()
        )

    def _rehome(self, index: int) -> Callable[[Tensor], None]:
        grad_view = self._places[index][2]

        def hook(param: Tensor) -> None:
            grad = param.grad
            # sparse grads and grads with a graph (create_graph=True) stay as autograd made them
            if grad is None or grad is grad_view or grad.is_sparse or grad.requires_grad:
                return
            if not self._at_home(index):
                self._left_home(index)
                return
            # neither side requires grad, so no graph is recorded even under create_graph,
            # and no torch.no_grad() is needed (entering it costs more than a small copy)
            grad_view.copy_(grad)
            param.grad = grad_view

        return hook

    def _left_home(self, index: int) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"flatten_parameters: parameter {self.names[index]!r} has left its flat "
                "buffer (moved by .to(), .half(), load_state_dict(assign=True) or similar); "
                "training is unaffected but no longer flat. Call flatten_parameters(module) "
                "again to re-flatten.",
                stacklevel=1,
            )

    def intact(self) -> bool:
        """Whether every parameter is still the module's and still lives in its buffer."""
        module = self._module()
        if module is None or not self._hooks:
            return False
        current = dict(module.named_parameters())
        return all(
            current.get(name) is param and self._at_home(i)
            for i, (name, param) in enumerate(zip(self.names, self.params, strict=True))
        )

    def unflatten(self) -> None:
        """Give every parameter and gradient still in the buffers its own memory again,
        and remove the hooks.  The values are unchanged; the handle is spent."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        with torch.no_grad():
            for i, param in enumerate(self.params):
                if _OWNERS.get(param) is not None and _OWNERS[param]() is self:
                    del _OWNERS[param]
                if self._at_home(i):
                    param.data = param.data.clone()
                grad_view = self._places[i][2]
                if param.grad is grad_view:
                    param.grad = grad_view.clone()

    def __repr__(self) -> str:
        kinds = ", ".join(
            f"{len(b.params)} x {b.data.dtype} on {b.data.device} ({b.data.numel():,} elements)"
            for b in self.buffers
        )
        state = "" if self.intact() else ", not intact"
        return f"FlatParameters({kinds or 'no parameters'}{state})"


def flatten_parameters(module: torch.nn.Module) -> FlatParameters:
    """Re-home ``module``'s trainable parameters and their gradients as views of one flat
    buffer per (device, dtype), in the order of ``module.parameters()``.

    Afterwards consecutive parameters of one dtype are adjacent in memory (no padding:
    ``params[i + 1].data_ptr() == params[i].data_ptr() + params[i].numel() *
    params[i].element_size()``), and so are their gradients once backward has made them.
    The values, the ``Parameter`` objects and every result of training are unchanged
    (bitwise: tested against the unflattened model with every optimlab optimizer).

    Example::

        model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 1))
        flat = optimlab.flatten_parameters(model)   # after .to(device), before DDP(model)
        optimizer = optimlab.Adam(model.parameters(), lr=1e-3)
        for x, y in data:
            optimizer.zero_grad()                   # set_to_none=True or False: both work
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        flat.buffers[0].data                        # all float32 parameters, end to end

    What it keeps working: ``zero_grad()`` in both ``set_to_none`` modes (after
    ``set_to_none=True`` each new gradient is copied into its view once per backward: one
    extra pass over the gradient bytes), gradient accumulation and ``retain_graph``,
    parameters that get no gradient (their ``.grad`` stays None), tied parameters (the
    same Parameter twice: flattened once, under its first name), ``module.state_dict()`` and
    ``load_state_dict()`` in both directions between flat and plain models, checkpoints
    (``optimlab.checkpoint``, ``torch.save``), optimizer ``state_dict`` interop with
    ``torch.optim``, and ``DistributedDataParallel`` with its default
    ``gradient_as_bucket_view=False`` (DDP copies the averaged gradients back into the
    views).

    Parameters with ``requires_grad=False`` (frozen) are left where they are: no optimizer
    steps them, and leaving them out keeps the trainable ones adjacent.  The gradient
    buffer is allocated here, zeroed: the size of the trainable parameters, which
    backward would allocate anyway.

    A second call on the same module returns the same handle while it is intact; after a
    parameter has left its buffer (below) it flattens again.  A call whose parameters are
    partly held by another call (a submodule flattened before its parent) raises
    ``ValueError``: ``unflatten()`` the other handle first.

    Not supported (training stays correct; the memory is simply no longer flat):

    * ``.to()``, ``.half()``, ``.cuda()`` or ``load_state_dict(assign=True)`` after
      flattening give parameters new memory: a warning at the next backward, and
      ``flat.intact()`` turns False; call ``flatten_parameters(module)`` again.  Move the
      module first, then flatten.
    * Parameters added to the module later are not in the buffers (``unflatten()``, then
      flatten again), nor are frozen parameters unfrozen later.
    * ``gradient_as_bucket_view=True`` in DDP: DDP points every ``.grad`` into its own
      buckets (in reverse parameter order), so the gradients are not flat, and each
      backward copies them once more; the parameters stay flat.  Training is bitwise the
      unflattened DDP run's at 2 processes; at 3, with ``set_to_none=False``, it differed
      in the last bit (DDP then scales a copied gradient by 1/N where it would divide its
      own bucket by N).  Keep the default ``False``.
    * Sparse gradients (``nn.Embedding(sparse=True)``) and gradients with a graph
      (``backward(create_graph=True)``) stay where autograd puts them.
    * FSDP and other tensor-subclass parameters (DTensor), lazy (uninitialized)
      parameters: ``ValueError``.
    * ``module.state_dict()`` values are views of the buffer, and ``torch.save`` writes
      a view's whole storage: the full state dict costs what it did, but saving a few
      entries alone writes the whole buffer (``.clone()`` them first).
    * Writing the buffers directly (``flat.buffers[0].data.mul_(2)``) bypasses the
      parameters' autograd version counters; write through the parameters between a
      forward and its backward.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"flatten_parameters expects a torch.nn.Module, got {type(module)!r}")
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    for name, param in named:
        _check(name, param)
    holders = {id(h): h for h in (_holder(p) for _, p in named) if h is not None}
    for holder in holders.values():
        if _same(holder.params, [p for _, p in named]) and holder.intact():
            return holder
        if holder.intact():
            name = next(n for n, p in named if _holder(p) is holder)
            raise ValueError(
                f"flatten_parameters: parameter {name!r} is already flat, held by an earlier "
                f"call over other parameters ({len(holder.params)} of them, from "
                f"{holder.names[0]!r}); call unflatten() on the handle it returned first"
            )
        holder.unflatten()  # its parameters were moved (.to(), assign=True): start over
    return FlatParameters(module, named)


def _check(name: str, param: torch.nn.Parameter) -> None:
    if torch.nn.parameter.is_lazy(param):
        raise ValueError(
            f"flatten_parameters: parameter {name!r} is uninitialized (a lazy module); "
            "run one forward pass first"
        )
    if type(param.data) is not torch.Tensor or param.layout != torch.strided:
        raise ValueError(
            f"flatten_parameters: parameter {name!r} is a {type(param.data).__name__} with "
            f"layout {param.layout}; only plain dense tensors can be flattened (not FSDP's "
            "DTensor shards or sparse parameters)"
        )


def _holder(param: torch.nn.Parameter) -> FlatParameters | None:
    ref = _OWNERS.get(param)
    holder = ref() if ref is not None else None
    return holder if holder is not None and holder._hooks else None


def _same(a: tuple | list, b: tuple | list) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
