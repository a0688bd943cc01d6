"""DDP workers for the flat-parameter tests (run by dist_workers.launch, 2 gloo processes).

Each worker trains the same model twice under DDP, once flattened and once plain, so the
flat run has an oracle that went through the very same reduction: they must agree bitwise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from dist_workers import (
    OPTIMIZERS,
    STEPS,
    _gathered,
    batch,
    local,
    make_model,
    make_optimizer,
    make_schedule,
)
from optimlab.flat import FlatParameters, flatten_parameters

# SGD with Nesterov momentum and weight decay; Adam with AMSGrad and weight decay
DDP_ROWS = [0, 4]


def grads_flat(flat: FlatParameters) -> bool:
    """Whether every gradient is the view of its flat buffer at its parameter's offset."""
    for buffer in flat.buffers:
        base, size = buffer.grad.data_ptr(), buffer.grad.element_size()
        for param, offset in zip(buffer.params, buffer.offsets, strict=True):
            if param.grad is None or param.grad.data_ptr() != base + offset * size:
                return False
    return True


def run(row: int, flatten: bool, bucket_view: bool, set_to_none: bool, rank: int, world: int):
    """Final params; whether the grads were flat after each backward; whether still intact."""
    name, kwargs = OPTIMIZERS[row]
    module = make_model()
    flat = flatten_parameters(module) if flatten else None
    model = DDP(module, gradient_as_bucket_view=bucket_view)
    optimizer = make_optimizer(model.parameters(), name, kwargs)
    schedule = make_schedule(optimizer, kwargs)
    flat_grads = []
    for step in range(STEPS):
        x, y = batch(step)
        optimizer.zero_grad(set_to_none=set_to_none)
        loss = torch.nn.functional.mse_loss(model(local(x, rank, world)), local(y, rank, world))
        loss.backward()
        views = _gathered([p.grad for p in model.parameters()], world)
        if not all(torch.equal(views[0], v) for v in views[1:]):
            raise AssertionError(f"{name}: the ranks' gradients differ at step {step}")
        if flat is not None:
            flat_grads.append(grads_flat(flat))
        optimizer.step()
        schedule.step()
    params = [p.detach().clone() for p in module.parameters()]
    return params, flat_grads, flat.intact() if flat is not None else None


def ddp_flat_worker(rank: int, world_size: int, out: Path, bucket_view: bool) -> None:
    """For each row and zero_grad mode, ``{flatten: run(...)}``."""
    results = {}
    for row in DDP_ROWS:
        for set_to_none in (True, False):
            results[row, set_to_none] = {
                flatten: run(row, flatten, bucket_view, set_to_none, rank, world_size)
                for flatten in (True, False)
            }
    torch.save(results, out / f"ddp_flat_{bucket_view}_{rank}.pt")
