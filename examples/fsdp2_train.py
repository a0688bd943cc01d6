"""Fully sharded training (FSDP2) with an optimlab optimizer, resumable from a DCP checkpoint.

    torchrun --standalone --nproc_per_node=2 examples/fsdp2_train.py --steps 200 --ckpt fsdp2-ckpt

``fully_shard`` splits every parameter across the ranks (a DTensor on each), so
each rank keeps only its shard of the parameters, the gradients and the
optimizer state (Adam: exp_avg and exp_avg_sq), and the optimizer steps just
that shard.  Checkpoints are written by every rank in parallel with
``torch.distributed.checkpoint`` into ``CKPT/step-N/``; ``CKPT/latest`` names
the newest complete one and is replaced atomically only after every rank has
finished writing, so a run killed mid-save resumes from the previous checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import optimlab
from optimlab.checkpoint import atomic_write
from optimlab.schedules import ScheduledLR, cosine, warmup


def make_model(world_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 128), torch.nn.GELU(),
        torch.nn.Linear(128, 8),
    )  # fmt: skip
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)  # one all-gather/reduce-scatter unit per layer
    return fully_shard(model, mesh=mesh)


def batch(step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(64, 32, generator=gen)
    y = torch.sin(x[:, :8] * 2) + 0.05 * torch.randn(64, 8, generator=gen)
    return x.chunk(world_size)[rank], y.chunk(world_size)[rank]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="train until this step")
    parser.add_argument("--ckpt", default="fsdp2-ckpt", help="checkpoint directory")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--total-steps", type=int, default=1000, help="length of the schedule")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = make_model(world_size)
    optimizer = optimlab.Adam(model.parameters(), lr=2e-3)
    schedule = ScheduledLR(optimizer, warmup(50, cosine(2e-3, args.total_steps - 50)))
    root = Path(args.ckpt)
    latest = root / "latest"

    def state() -> dict:
        return {
            "model": get_model_state_dict(model),
            "optimizer": get_optimizer_state_dict(model, optimizer),
            "schedule": schedule.state_dict(),
        }

    if latest.exists():
        loaded = state()
        dcp.load(loaded, checkpoint_id=root / latest.read_text())
        set_model_state_dict(model, loaded["model"])
        set_optimizer_state_dict(model, optimizer, loaded["optimizer"])
        schedule.load_state_dict(loaded["schedule"])
        if rank == 0:
            print(f"resumed from {root / latest.read_text()}", flush=True)

    def save(step: int) -> None:
        name = f"step-{step:06d}"
        dcp.save(state(), checkpoint_id=root / name)
        dist.barrier()  # every rank's shard is on disk
        if rank == 0:
            previous = latest.read_text() if latest.exists() else None
            atomic_write(latest, lambda f: f.write(name.encode()))
            if previous and previous != name:
                shutil.rmtree(root / previous, ignore_errors=True)
        dist.barrier()

    for step in range(schedule.last_epoch, args.steps):
        x, y = batch(step, rank, world_size)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if rank == 0 and (step + 1) % 50 == 0:
            print(f"step {step + 1:5d}  loss {loss.item():.4f}  lr {schedule.get_last_lr()[0]:.2e}")
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(step + 1)

    shard = sum(p.to_local().numel() for p in model.parameters())
    full = sum(p.numel() for p in model.parameters())
    checksum = sum(p.full_tensor().double().sum() for p in model.parameters()).item()
    if rank == 0:
        print(f"rank 0 holds {shard} of {full} parameters (and their optimizer state)")
        print(f"parameters checksum {checksum.hex()} at step {schedule.last_epoch}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
