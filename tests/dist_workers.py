"""Multi-process harness and worker functions for the torch.distributed tests.

``launch`` starts ``world_size`` fresh processes (spawn) on loopback with the
gloo backend and a free port, runs ``worker(rank, world_size, out_dir, *args)``
in each, and fails with the worker's traceback if one raises, or kills them all
after ``timeout`` seconds.  Every process uses one thread, so a computation is
bitwise repeatable across processes (matmul reductions depend on the thread
count; the optimizer kernels are elementwise and do not).

The workers write their results with ``torch.save`` into ``out_dir``; the tests
compare them with single-process runs made in the test process.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optimlab
from optimlab.schedules import ScheduledLR, cosine, warmup

# -- the harness ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(worker, rank: int, world_size: int, port: int, out_dir: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60)
        )
        worker(rank, world_size, Path(out_dir), *args)
        dist.barrier()  # no rank tears down its sockets while another still talks
    except BaseException:
        (Path(out_dir) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # The results are on disk.  Skip the interpreter's teardown: in about one fresh-clone
    # run in three, a gloo rank that had run FSDP2 aborted there ("terminate called without
    # an active exception": a C++ std::thread of torch's destroyed while joinable) after its
    # work had finished and been saved.  optimlab starts no C++ threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(worker, out_dir: Path, *args, world_size: int = 2, timeout: float = 180) -> None:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(worker, rank, world_size, port, str(out_dir), args))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        if any(proc.is_alive() for proc in procs):
            raise TimeoutError(f"{worker.__name__} did not finish within {timeout} s")
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = sorted(Path(out_dir).glob("rank*.error"))
    if errors:
        raise AssertionError("\n".join(e.read_text() for e in errors))
    codes = [proc.exitcode for proc in procs]
    if any(codes):
        raise AssertionError(f"{worker.__name__} exit codes {codes}")


# -- the problem every test trains ------------------------------------------------

GLOBAL_BATCH, STEPS = 16, 6

# one row per optimizer, all options that change the state layout represented
OPTIMIZERS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, momentum_form="lecture")),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, bias_correction=False)),
    ("AdamW", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.01)),
    # stored formats (issue 12): 8-bit blocks (the first layer's 4,608 weights; smaller
    # tensors keep float32) and bfloat16 with stochastic rounding
    ("AdamW", dict(lr=0.01, state_precision="8bit")),
    ("SGD", dict(lr=0.05, momentum=0.9, state_precision="bf16")),
]


def make_model(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 72),  # 4,608 weights: enough for 8-bit state (storage.MIN_8BIT)
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(72, 4),
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of a step: the same on every process, by seed."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, 64, generator=gen), torch.randn(GLOBAL_BATCH, 4, generator=gen)


def local(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    return tensor.chunk(world_size)[rank]


def make_optimizer(params, name: str, kwargs: dict, **extra) -> torch.optim.Optimizer:
    return getattr(optimlab, name)(params, **kwargs, **extra)


def make_schedule(optimizer: torch.optim.Optimizer, kwargs: dict) -> ScheduledLR:
    lr = kwargs["lr"]
    return ScheduledLR(optimizer, warmup(3, cosine(lr, 9, final_lr=lr / 10)))


def train_steps(model, optimizer, schedule, steps: range, rank: int = 0, world_size: int = 1):
    for step in steps:
        x, y = batch(step)
        x, y = local(x, rank, world_size), local(y, rank, world_size)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def single_process_run(name: str, kwargs: dict, steps: int = STEPS) -> list[torch.Tensor]:
    """The oracle: one process, the whole global batch, the same schedule."""
    model = make_model()
    optimizer = make_optimizer(model.parameters(), name, kwargs)
    train_steps(model, optimizer, make_schedule(optimizer, kwargs), range(steps))
    return [p.detach().clone() for p in model.parameters()]


def _gathered(tensors: list[torch.Tensor], world_size: int) -> list[list[torch.Tensor]]:
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    out = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(out, flat)
    return out


# -- workers ------------------------------------------------------------------------


def ddp_worker(rank: int, world_size: int, out: Path) -> None:
    """DDP + every optimizer: ranks hold identical parameters after every step."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    for i, (name, kwargs) in enumerate(OPTIMIZERS):
        model = DDP(make_model())
        optimizer = make_optimizer(model.parameters(), name, kwargs)
        schedule = make_schedule(optimizer, kwargs)
        for step in range(STEPS):
            train_steps(model, optimizer, schedule, range(step, step + 1), rank, world_size)
            views = _gathered(list(model.parameters()), world_size)
            if not all(torch.equal(views[0], v) for v in views[1:]):
                raise AssertionError(f"{name} {kwargs}: ranks differ after step {step}")
        results[i] = [p.detach().clone() for p in model.module.parameters()]
    torch.save(results, out / f"ddp{rank}.pt")


def zero_worker(rank: int, world_size: int, out: Path) -> None:
    """ZeroRedundancyOptimizer around each optimlab class vs the unsharded optimizer."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    results = {}
    for i, (name, kwargs) in enumerate(OPTIMIZERS):
        runs = {}
        for sharded in (False, True):
            model = DDP(make_model())
            if sharded:
                optimizer = ZeroRedundancyOptimizer(
                    model.parameters(), optimizer_class=getattr(optimlab, name), **kwargs
                )
            else:
                optimizer = make_optimizer(model.parameters(), name, kwargs)
            train_steps(model, optimizer, None, range(STEPS), rank, world_size)
            runs[sharded] = (model, optimizer)
        zero_model, zero = runs[True]
        plain_model, plain = runs[False]
        zero.consolidate_state_dict(to=0)
        if rank == 0:
            consolidated = zero.state_dict()
            # the consolidated state loads into the plain optimizer and equals its state
            twin = make_optimizer(make_model().parameters(), name, kwargs)
            twin.load_state_dict(consolidated)
            # bfloat16 state rounds stochastically in streams keyed by a tensor's place in
            # its group, which ZeRO's per-rank groups change: compare with what was saved
            # (8-bit state too, but its one tensor keeps its key: see test_distributed's
            # rounds_stochastically)
            stochastic = kwargs.get("state_precision") == "bf16"
            expected = consolidated if stochastic else plain.state_dict()
            for index, state in expected["state"].items():
                for key, value in state.items():
                    if not torch.equal(twin.state_dict()["state"][index][key], value):
                        raise AssertionError(f"{name}: consolidated {key} of param {index} differs")
        results[i] = (
            [p.detach().clone() for p in zero_model.module.parameters()],
            [p.detach().clone() for p in plain_model.module.parameters()],
        )
    torch.save(results, out / f"zero{rank}.pt")


def fsdp2_worker(rank: int, world_size: int, out: Path) -> None:
    """fully_shard: parameters are DTensors; the fused kernels step each rank's local shard."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    results = {}
    for i, (name, kwargs) in enumerate(OPTIMIZERS):
        model = _fsdp2_model(mesh, fully_shard)
        # fused=True: the kernels must take every local shard, or the step raises
        optimizer = make_optimizer(model.parameters(), name, kwargs, fused=True)
        shard_sizes = [p.to_local().numel() for p in model.parameters()]
        full_sizes = [p.numel() for p in model.parameters()]
        train_steps(
            model, optimizer, make_schedule(optimizer, kwargs), range(STEPS), rank, world_size
        )
        # optimizer state is sharded like the parameters: no rank holds a full copy
        for state, shard, full in zip(
            optimizer.state.values(), shard_sizes, full_sizes, strict=True
        ):
            for key, value in state.items():
                if key not in ("step", "mu_product") and shard < full:
                    if value.to_local().numel() != shard:
                        raise AssertionError(f"{name}: {key} is not sharded")
        results[i] = [p.full_tensor().detach().clone() for p in model.parameters()]
    torch.save(results, out / f"fsdp2_{rank}.pt")


def _fsdp2_model(mesh, fully_shard) -> torch.nn.Module:
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def dcp_worker(rank: int, world_size: int, out: Path, wrapper: str, phase: str, head: int) -> None:
    """Distributed checkpoint of model + optimizer + schedule step, across process launches.

    phase "head": train ``head`` steps, save with torch.distributed.checkpoint,
    then carry on to STEPS without stopping (the uninterrupted reference).
    phase "tail": new processes load the checkpoint and train the remaining steps.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    results = {}
    for i, (name, kwargs) in enumerate(OPTIMIZERS):
        model = _wrapped(wrapper, world_size)
        optimizer = make_optimizer(model.parameters(), name, kwargs)
        schedule = make_schedule(optimizer, kwargs)
        checkpoint_dir = out / f"dcp-{wrapper}-{i}"
        if phase == "head":
            train_steps(model, optimizer, schedule, range(head), rank, world_size)
            state = {
                "model": get_model_state_dict(model),
                "optimizer": get_optimizer_state_dict(model, optimizer),
                "schedule": schedule.state_dict(),
            }
            dcp.save(state, checkpoint_id=checkpoint_dir)
        else:
            state = {
                "model": get_model_state_dict(model),
                "optimizer": get_optimizer_state_dict(model, optimizer),
                "schedule": schedule.state_dict(),
            }
            dcp.load(state, checkpoint_id=checkpoint_dir)
            set_model_state_dict(model, state["model"])
            set_optimizer_state_dict(model, optimizer, state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if schedule.last_epoch != head:
                raise AssertionError(f"schedule resumed at {schedule.last_epoch}, not {head}")
        train_steps(model, optimizer, schedule, range(head, STEPS), rank, world_size)
        results[i] = [_full(p).detach().clone() for p in model.parameters()]
    torch.save(results, out / f"dcp-{wrapper}-{phase}{rank}.pt")


def _wrapped(wrapper: str, world_size: int) -> torch.nn.Module:
    if wrapper == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(make_model())
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    return _fsdp2_model(init_device_mesh("cpu", (world_size,)), fully_shard)


def _full(param: torch.Tensor) -> torch.Tensor:
    return param.full_tensor() if hasattr(param, "full_tensor") else param


def resume_worker(rank: int, world_size: int, out: Path, phase: str, head: int) -> None:
    """Exact resume through optimlab.checkpoint, for every optimizer with warmup+cosine.

    phase "head": train ``head`` steps, write one atomic checkpoint (rank 0: model,
    optimizer, schedule; every rank's RNG state, gathered), then go on to STEPS.
    phase "tail": fresh processes restore the checkpoint and train to STEPS.
    Dropout makes the RNG part of the state.
    """
    import optimlab.checkpoint as ckpt

    results = {}
    for i, (name, kwargs) in enumerate(OPTIMIZERS):
        torch.manual_seed(0)
        model = make_model(dropout=0.1)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model)
        optimizer = make_optimizer(model.parameters(), name, kwargs)
        schedule = make_schedule(optimizer, kwargs)
        path = out / f"resume-{world_size}-{i}.ckpt"
        if phase == "head":
            torch.manual_seed(1)
            train_steps(model, optimizer, schedule, range(head), rank, world_size)
            rng = [None] * world_size
            dist.all_gather_object(rng, ckpt.rng_state())
            if rank == 0:
                ckpt.save(path, {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": rng,
                })  # fmt: skip
            dist.barrier()
        else:
            state = ckpt.load(path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            ckpt.set_rng_state(state["rng"][rank])
        train_steps(model, optimizer, schedule, range(head, STEPS), rank, world_size)
        results[i] = [p.detach().clone() for p in model.parameters()]
    torch.save(results, out / f"resume-{world_size}-{phase}{rank}.pt")
