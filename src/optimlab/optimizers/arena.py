"""A param group's state tensors of one kind as views of one buffer, in parameter order.

With state in one buffer per kind (``exp_avg`` of every param, then ``exp_avg_sq`` of every
param, ...), a fused step streams each kind as one long array instead of hundreds of small
ones: the hardware prefetchers follow it across tensors (they stop at every 4 KiB page of
a scattered allocation).  The state dict keeps torch's shape: one tensor per param and key,
which are views; ``torch.save`` writes each buffer once, and ``torch.optim`` loads it.

Packing happens when the kernels build a plan (the first step, new state, a loaded
checkpoint); a group already packed is left as it is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

__all__ = ["pack"]

ALIGN = 64  # bytes: every view starts on a cache line (and a full AVX-512 vector)


def _plain(tensor: Any) -> bool:
    return isinstance(tensor, Tensor) and type(tensor).__torch_dispatch__ is (
        Tensor.__torch_dispatch__
    )


def _padded(numel: int, element_size: int) -> int:
    step = max(ALIGN // element_size, 1)
    return -(-numel // step) * step


def _packed(tensors: list[Tensor]) -> bool:
    """Whether ``tensors`` already are views of one buffer, in order, as pack lays them out."""
    storage = tensors[0].untyped_storage().data_ptr()
    offset = 0
    for tensor in tensors:
        if (tensor.untyped_storage().data_ptr() != storage
                or tensor.storage_offset() != offset):  # fmt: skip
            return False
        offset += _padded(tensor.numel(), tensor.element_size())
    return True


def pack(states: list[dict[str, Any]]) -> None:
    """Re-home the state tensors of ``states`` (one dict per param, in parameter order) as
    views of one buffer per (key, dtype, device).  Counters (0-dim) and tensor subclasses
    (FSDP2's DTensor) stay as they are."""
    kinds: dict[tuple, list[tuple[dict, str]]] = defaultdict(list)
    for state in states:
        for key, value in state.items():
            if _plain(value) and value.dim() > 0 and value.numel() > 0 and (
                value.is_contiguous()
                or value.is_contiguous(memory_format=torch.channels_last) and value.dim() == 4
            ):  # fmt: skip
                kinds[key, value.dtype, value.device].append((state, key))
    for (_, dtype, device), members in kinds.items():
        tensors = [state[key] for state, key in members]
        if len(tensors) < 2 or _packed(tensors):
            continue
        total = sum(_padded(t.numel(), t.element_size()) for t in tensors)
        buffer = torch.empty(total, dtype=dtype, device=device)
        offset = 0
        for (state, key), tensor in zip(members, tensors, strict=True):
            view = buffer.as_strided(tensor.shape, tensor.stride(), offset)
            view.copy_(tensor)
            state[key] = view
            offset += _padded(tensor.numel(), tensor.element_size())
