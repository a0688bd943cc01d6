"""optimlab inside torch.distributed: DDP, ZeRO-1, FSDP2, distributed checkpoints,
and exact resume across process restarts.  Two processes on loopback with gloo;
see dist_workers.py for the harness (free port, timeout, cleanup)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from dist_workers import (
    OPTIMIZERS,
    STEPS,
    dcp_worker,
    ddp_worker,
    fsdp2_worker,
    launch,
    resume_worker,
    single_process_run,
    zero_worker,
)
from optim_cases import case_id

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed"),
]
ROWS = list(enumerate(OPTIMIZERS))
# the same math on a split batch: gradients are averaged in another order
SPLIT_BATCH = dict(rtol=1e-5, atol=1e-6)


def split_batch(kwargs: dict) -> dict:
    """SPLIT_BATCH, or for stored state (8-bit, bfloat16) what its rounding makes of a last-bit
    difference in the gradients: a stored value one step of its format away (8-bit: 1/16 of
    a block's largest value), carried through the remaining steps."""
    return dict(rtol=2e-3, atol=2e-4) if kwargs.get("state_precision") else SPLIT_BATCH


def rounds_stochastically(kwargs: dict) -> bool:
    """Whether ZeRO-1 draws other random bits than the unsharded run.  bfloat16 and 8-bit
    state round stochastically, in streams keyed by a tensor's place in its optimizer's
    group, which ZeRO-1's per-rank groups change: other (as good) bits.  Except here for
    8-bit: the model's one tensor large enough for it (4,608 weights; the rest stay float32)
    is the first of rank 0's shard, so it keeps its key (group 0, place 0) and its bits --
    bitwise, and this test fails if ZeRO ever places it elsewhere."""
    return kwargs.get("state_precision") == "bf16"


@pytest.fixture(scope="module")
def one_thread():
    """Match the workers' thread count, so single-process oracles reduce the same way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def oracle(one_thread):
    return {i: single_process_run(name, kwargs) for i, (name, kwargs) in ROWS}


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    launch(ddp_worker, out)
    return [torch.load(out / f"ddp{r}.pt") for r in range(2)]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: case_id(r[1]))
def test_ddp_matches_single_process_on_the_global_batch(row, ddp_results, oracle):
    index, (_, kwargs) = row
    rank0, rank1 = ddp_results[0][index], ddp_results[1][index]
    for a, b, expected in zip(rank0, rank1, oracle[index], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # also checked after every step
        torch.testing.assert_close(a, expected, **split_batch(kwargs))


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero")
    launch(zero_worker, out)
    return [torch.load(out / f"zero{r}.pt") for r in range(2)]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: case_id(r[1]))
def test_zero_redundancy_optimizer_matches_unsharded(row, zero_results):
    """Each rank updates its shard with the same per-tensor math: bitwise equal.
    (The worker also checks that consolidate_state_dict + state_dict load into a
    plain optimizer and equal its state.)"""
    index, (_, kwargs) = row
    # other random bits: the momentum buffer a few bfloat16 steps (2**-8 of it) apart, times
    # lr (0.05), over the 6 steps
    tolerance = dict(rtol=0, atol=2e-3) if rounds_stochastically(kwargs) else dict(rtol=0, atol=0)
    for rank in range(2):
        sharded, plain = zero_results[rank][index]
        for a, b in zip(sharded, plain, strict=True):
            torch.testing.assert_close(a, b, **tolerance)


@pytest.fixture(scope="module")
def fsdp2_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    launch(fsdp2_worker, out)
    return [torch.load(out / f"fsdp2_{r}.pt") for r in range(2)]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: case_id(r[1]))
def test_fsdp2_matches_single_process(row, fsdp2_results, oracle):
    index, (name, kwargs) = row
    expected = oracle[index]
    if kwargs.get("state_precision"):  # FSDP2's DTensors keep state in their own dtype
        plain = {key: value for key, value in kwargs.items() if key != "state_precision"}
        expected = single_process_run(name, plain)
    for rank in range(2):
        for a, b in zip(fsdp2_results[rank][index], expected, strict=True):
            torch.testing.assert_close(a, b, **SPLIT_BATCH)


def _head_and_tail(tmp_path_factory, worker, name, *args, world_size=2):
    out = tmp_path_factory.mktemp(name)
    launch(worker, out, *args, "head", 3, world_size=world_size)
    launch(worker, out, *args, "tail", 3, world_size=world_size)
    return out


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp2"])
def test_distributed_checkpoint_resumes_exactly(wrapper, tmp_path_factory):
    """get/set_optimizer_state_dict + torch.distributed.checkpoint, new processes,
    the schedule's step restored: the same parameters as never stopping."""
    out = _head_and_tail(tmp_path_factory, dcp_worker, f"dcp-{wrapper}", wrapper)
    for rank in range(2):
        straight = torch.load(out / f"dcp-{wrapper}-head{rank}.pt")
        resumed = torch.load(out / f"dcp-{wrapper}-tail{rank}.pt")
        for i, _ in ROWS:
            for a, b in zip(resumed[i], straight[i], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{OPTIMIZERS[i]}")


@pytest.mark.parametrize("world_size", [1, 2], ids=["single-process", "ddp-2"])
def test_checkpoint_resume_is_bitwise_exact(world_size, tmp_path_factory):
    """Every optimizer with warmup+cosine and dropout: stop after 3 steps, restart
    fresh processes from optimlab.checkpoint, finish: bitwise the uninterrupted run."""
    out = _head_and_tail(tmp_path_factory, resume_worker, "resume", world_size=world_size)
    for rank in range(world_size):
        straight = torch.load(out / f"resume-{world_size}-head{rank}.pt")
        resumed = torch.load(out / f"resume-{world_size}-tail{rank}.pt")
        assert len(resumed) == len(OPTIMIZERS) and STEPS > 3
        for i, _ in ROWS:
            for a, b in zip(resumed[i], straight[i], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{OPTIMIZERS[i]}")
