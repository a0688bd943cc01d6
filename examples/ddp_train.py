"""Data-parallel training with an optimlab optimizer and schedule, checkpointed and resumable.

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --steps 200 --ckpt ddp.ckpt

Every rank holds the whole model (DistributedDataParallel averages gradients),
so every rank also holds the whole optimizer state.  Rank 0 writes one atomic
checkpoint (model, optimizer, schedule step, every rank's RNG); run the command
again with a larger ``--steps`` and training resumes exactly where it stopped:
the parameters equal those of a run that never stopped, bit for bit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import optimlab
import optimlab.checkpoint as ckpt
from optimlab.schedules import ScheduledLR, cosine, warmup

GLOBAL_BATCH = 64


def batch(step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the step's global batch: a function of the step, so resuming
    needs no data-loader state.  The target is a fixed random 'teacher' network."""
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(GLOBAL_BATCH, 32, generator=gen)
    teacher = torch.Generator().manual_seed(12345)
    w = torch.randn(32, 8, generator=teacher)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(GLOBAL_BATCH, 8, generator=gen)
    return x.chunk(world_size)[rank], y.chunk(world_size)[rank]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="train until this step")
    parser.add_argument("--ckpt", default="ddp.ckpt", help="checkpoint file (resumed if present)")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--total-steps", type=int, default=1000, help="length of the schedule")
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, 8)
    )
    model = DDP(model)
    optimizer = optimlab.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = ScheduledLR(optimizer, warmup(50, cosine(3e-3, args.total_steps - 50)))
    torch.manual_seed(1 + rank)  # dropout masks differ per rank

    Path(args.ckpt).parent.mkdir(parents=True, exist_ok=True)
    if Path(args.ckpt).exists():
        state = ckpt.load(args.ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        ckpt.set_rng_state(state["rng"][rank])
        if rank == 0:
            print(f"resumed from {args.ckpt} at step {schedule.last_epoch}", flush=True)

    def save() -> None:
        rngs = [None] * world_size
        dist.all_gather_object(rngs, ckpt.rng_state())
        if rank == 0:
            ckpt.save(args.ckpt, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rngs,
            })  # fmt: skip
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
            save()

    if rank == 0:
        checksum = sum(p.double().sum() for p in model.parameters()).item()
        print(f"parameters checksum {checksum.hex()} at step {schedule.last_epoch}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
