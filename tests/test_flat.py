"""optimlab.flat.flatten_parameters: params and grads as views of one buffer per (device, dtype).

The oracle throughout is the same model left unflattened: the same data, optimizer and
steps must give bitwise the same parameters, gradients and optimizer state.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.distributed as dist

import optimlab
import optimlab.checkpoint as ckpt
from dist_workers import OPTIMIZERS, launch, single_process_run
from optim_cases import case_id
from optimlab.flat import flatten_parameters
from optimlab.optimizers.dispatch import cached_plan

VOCAB, WIDTH = 11, 6


class Net(torch.nn.Module):
    """Every kind of parameter the helper must handle: a tied pair, a frozen one, one that
    never gets a gradient, a conv weight, biases and norms."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.conv = torch.nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
        self.norm = torch.nn.LayerNorm(WIDTH)
        self.scale = torch.nn.Parameter(torch.linspace(0.5, 1.5, WIDTH), requires_grad=False)
        self.unused = torch.nn.Parameter(torch.randn(5))
        self.head = torch.nn.Linear(WIDTH, VOCAB)
        self.head.weight = self.embed.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.head(self.norm(h) * self.scale)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def loss_of(model: torch.nn.Module, step: int, micro: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 * step + micro)
    tokens = torch.randint(0, VOCAB, (4, 9), generator=gen)
    targets = torch.randint(0, VOCAB, (4, 9), generator=gen)
    return torch.nn.functional.cross_entropy(model(tokens).reshape(-1, VOCAB), targets.reshape(-1))


def train(model, optimizer, steps, set_to_none=True, micro=1, start=0):
    for step in range(start, start + steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        for m in range(micro):
            loss_of(model, step, m).backward()
        optimizer.step()


def assert_same(a: torch.nn.Module, b: torch.nn.Module, with_grads: bool = True) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
        if with_grads:
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=name)


def assert_adjacent(params: list[torch.Tensor], grads: bool = False) -> None:
    """Each tensor starts where the previous one ends (no padding)."""
    tensors = [p.grad if grads else p for p in params]
    for prev, this in zip(tensors, tensors[1:], strict=False):
        assert this.data_ptr() == prev.data_ptr() + prev.numel() * prev.element_size()


def trained_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# -- layout ------------------------------------------------------------------------------


def test_params_and_grads_are_adjacent_views_in_module_order():
    model = make_net()
    before = [p.detach().clone() for p in model.parameters()]
    flat = flatten_parameters(model)
    (buffer,) = flat.buffers
    params = trained_params(model)
    assert list(buffer.params) == params and flat.params == tuple(params)
    assert flat.names == ("unused", "embed.weight", "conv.weight", "conv.bias",
                          "norm.weight", "norm.bias", "head.bias")  # fmt: skip
    assert buffer.data.numel() == sum(p.numel() for p in params)  # tied weight once
    assert buffer.data.data_ptr() == params[0].data_ptr()
    assert_adjacent(params)
    assert model.head.weight is model.embed.weight
    for p, value in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p, value, rtol=0, atol=0)
    for mode in (True, False):
        for _ in range(2):
            model.zero_grad(set_to_none=mode)
            loss_of(model, 0).backward()
            assert model.unused.grad is None
            assert_adjacent(params[1:], grads=True)
            for p, offset in zip(params, buffer.offsets, strict=True):
                if p.grad is not None:
                    assert p.grad.data_ptr() == buffer.grad[offset:].data_ptr()


def test_frozen_parameters_are_left_where_they_are():
    model = make_net()
    address = model.scale.data_ptr()
    flat = flatten_parameters(model)
    assert all(p is not model.scale for p in flat.params)
    assert model.scale.data_ptr() == address


def test_one_buffer_per_dtype_and_dense_strides_kept():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(5, 5).double(), torch.nn.Conv2d(4, 2, 1)
    ).to(memory_format=torch.channels_last)
    plain = copy.deepcopy(model)
    flat = flatten_parameters(model)
    assert [b.data.dtype for b in flat.buffers] == [torch.float32, torch.float64]
    assert [len(b.params) for b in flat.buffers] == [4, 2]
    assert_adjacent(list(flat.buffers[0].params))
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    for m in (model, plain):
        m[2](m[0](x)).sum().backward()
        m[1](torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert weight.grad.stride() == weight.stride()
    assert weight.grad.data_ptr() == flat.buffers[0].grad.data_ptr()
    assert_same(model, plain)


# -- training equals the unflattened model ---------------------------------------------


@pytest.mark.parametrize("fused", [False, None], ids=["reference", "kernels"])
@pytest.mark.parametrize("set_to_none", [True, False], ids=["to_none", "to_zero"])
@pytest.mark.parametrize("case", OPTIMIZERS, ids=case_id)
def test_training_is_bitwise_the_unflattened_models(case, set_to_none, fused):
    name, kwargs = case
    flat_model, plain = make_net(), make_net()
    flatten_parameters(flat_model)
    runs = []
    for model in (flat_model, plain):
        optimizer = getattr(optimlab, name)(model.parameters(), **kwargs, fused=fused)
        train(model, optimizer, 4, set_to_none)
        runs.append(optimizer)
    assert_same(flat_model, plain)
    states = [opt.state_dict()["state"] for opt in runs]
    torch.testing.assert_close(states[0], states[1], rtol=0, atol=0)
    assert_adjacent(trained_params(flat_model)[1:], grads=True)  # [0] is unused


def _layers() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Three 16-wide layers, flattened and not: every tensor a multiple of 64 bytes, so the
    state arena (which starts each tensor on a cache line) is end to end as well."""
    flat_model, plain = (torch.nn.Sequential(*(torch.nn.Linear(16, 16) for _ in range(3)))
                         for _ in range(2))  # fmt: skip
    plain.load_state_dict(flat_model.state_dict())
    flatten_parameters(flat_model)
    return flat_model, plain


@pytest.mark.parametrize("case", OPTIMIZERS, ids=case_id)
def test_adjacent_tensors_run_as_one_row(case):
    """Params, grads and state end to end: the kernel walks the flattened model as one row
    (bitwise the unflattened model, whose six tensors it walks one by one); bf16 state runs
    tensor by tensor (its rounding streams are per tensor).  (8-bit state keeps float32 in
    tensors this small, so those run together.)"""
    name, kwargs = case
    models = _layers()
    optimizers = [getattr(optimlab, name)(m.parameters(), **kwargs) for m in models]
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            model(x * (step + 1)).square().mean().backward()
            optimizer.step()
    per_tensor = kwargs.get("state_precision") == "bf16"
    assert cached_plan(optimizers[0], 0).runs == (6 if per_tensor else 1)
    assert cached_plan(optimizers[1], 0).runs == 6
    assert_same(*models)


@pytest.mark.parametrize("name", ["Adam", "NAdam", "Adagrad"])
def test_tensors_at_other_steps_are_run_apart(name):
    """Adjacent tensors run as one row only where their step counters agree: a layer that
    joins training late keeps its own bias correction (checked bitwise against the same
    model unflattened, whose tensors the kernel runs one by one)."""
    flat_model, plain = _layers()
    optimizers = [getattr(optimlab, name)(m.parameters(), lr=0.01) for m in (flat_model, plain)]
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    expected_runs = []
    for step in range(5):
        for model, optimizer in zip((flat_model, plain), optimizers, strict=True):
            optimizer.zero_grad()
            model(x * (step + 1)).square().mean().backward()
            if step < 2:  # the middle layer is frozen for two steps
                for p in model[1].parameters():
                    p.grad = None
            optimizer.step()
        expected_runs.append(cached_plan(optimizers[0], 0).runs)
    # layers 0 and 2 apart while 1 has no grad; then 1 is two steps behind both
    assert expected_runs == [2, 2, 3, 3, 3]
    assert cached_plan(optimizers[1], 0).runs == 6
    assert_same(flat_model, plain)


@pytest.mark.parametrize("set_to_none", [True, False], ids=["to_none", "to_zero"])
def test_gradient_accumulation_and_retain_graph(set_to_none):
    flat_model, plain = make_net(), make_net()
    flat = flatten_parameters(flat_model)
    for model in (flat_model, plain):
        optimizer = optimlab.Adam(model.parameters(), lr=0.01)
        train(model, optimizer, 3, set_to_none, micro=3)
        optimizer.zero_grad(set_to_none=set_to_none)
        loss = loss_of(model, 7)
        loss.backward(retain_graph=True)
        loss.backward()
        optimizer.step()
    assert_same(flat_model, plain)
    assert_adjacent(list(flat.params[1:]), grads=True)


def test_create_graph_grads_stay_where_autograd_puts_them():
    """A penalty on the gradient norm: the grads carry a graph, so they are left as
    autograd made them, and the second-order terms arrive as in the plain model."""
    flat_model, plain = make_net(), make_net()
    flatten_parameters(flat_model)
    for model in (flat_model, plain):
        optimizer = optimlab.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            optimizer.zero_grad()
            with warnings.catch_warnings():  # torch: create_graph=True makes a reference cycle
                warnings.simplefilter("ignore", UserWarning)
                loss_of(model, step).backward(create_graph=True)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert all(g.requires_grad for g in grads)
            (0.1 * sum(g.pow(2).sum() for g in grads)).backward()  # accumulates into .grad
            for p in model.parameters():
                p.grad = p.grad.detach() if p.grad is not None else None
            optimizer.step()
    assert_same(flat_model, plain)


def test_sparse_gradients_stay_sparse():
    torch.manual_seed(0)
    flat_model = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 1))
    plain = copy.deepcopy(flat_model)
    flatten_parameters(flat_model)
    tokens = torch.tensor([[1, 2, 2, 7]])
    for model in (flat_model, plain):
        optimizer = optimlab.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            model(tokens).sum().backward()
            assert model[0].weight.grad.is_sparse
            optimizer.step()
    assert_same(flat_model, plain, with_grads=False)


# -- state dicts, checkpoints, optimizer interop ---------------------------------------


def test_module_state_dict_round_trips_between_flat_and_plain(tmp_path):
    flat_model, plain = make_net(0), make_net(1)
    flat = flatten_parameters(flat_model)
    addresses = [p.data_ptr() for p in flat.params]
    flat_model.load_state_dict(plain.state_dict())  # plain -> flat: copied in place
    assert [p.data_ptr() for p in flat.params] == addresses and flat.intact()
    assert_same(flat_model, plain)
    torch.save(flat_model.state_dict(), tmp_path / "flat.pt")
    other = make_net(2)
    other.load_state_dict(torch.load(tmp_path / "flat.pt", weights_only=True))  # flat -> plain
    assert_same(other, flat_model)
    flat_model.load_state_dict(make_net(3).state_dict())
    assert flat.intact()
    assert_same(flat_model, make_net(3))


def test_checkpoint_resume_is_bitwise(tmp_path):
    path = tmp_path / "run.ckpt"
    model = make_net()
    flatten_parameters(model)
    optimizer = optimlab.AdamW(model.parameters(), lr=0.01)
    train(model, optimizer, 3)
    ckpt.save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    train(model, optimizer, 3, start=3)
    for flatten in (True, False):  # resumed flat, and resumed into a plain model
        resumed = make_net(seed=5)
        if flatten:
            flatten_parameters(resumed)
        again = optimlab.AdamW(resumed.parameters(), lr=0.01)
        state = ckpt.load(path)
        resumed.load_state_dict(state["model"])
        again.load_state_dict(state["optimizer"])
        train(resumed, again, 3, start=3)
        assert_same(resumed, model)


def test_optimizer_state_dict_moves_to_torch_optim_unchanged():
    flat_model, plain = make_net(), make_net()
    flatten_parameters(flat_model)
    # fused=False: the reference path is bitwise torch's (the kernels differ by an ulp)
    optimizer = optimlab.Adam(flat_model.parameters(), lr=0.01, amsgrad=True, fused=False)
    oracle = torch.optim.Adam(plain.parameters(), lr=0.01, amsgrad=True)
    train(flat_model, optimizer, 3)
    train(plain, oracle, 3)
    twin = make_net(seed=9)
    twin.load_state_dict(flat_model.state_dict())
    theirs = torch.optim.Adam(twin.parameters(), lr=0.01, amsgrad=True)
    # a copy, as from a file: torch's load_state_dict keeps the very tensors it is given
    theirs.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    torch.testing.assert_close(
        theirs.state_dict()["state"], oracle.state_dict()["state"], rtol=0, atol=0
    )
    train(twin, theirs, 3, start=3)
    train(flat_model, optimizer, 3, start=3)
    assert_same(twin, flat_model)


# -- the handle ----------------------------------------------------------------------------


def test_a_second_call_returns_the_same_handle():
    model = make_net()
    flat = flatten_parameters(model)
    assert flatten_parameters(model) is flat
    elements = 5 + 11 * 6 + 6 * 6 * 3 + 6 + 6 + 6 + 11  # the tied weight once
    assert f"7 x torch.float32 on cpu ({elements} elements)" in repr(flat)


def test_overlapping_calls_are_refused():
    model = make_net()
    flatten_parameters(model.conv)
    with pytest.raises(ValueError, match="parameter 'conv.weight' is already flat"):
        flatten_parameters(model)
    other = make_net()
    flatten_parameters(other)
    with pytest.raises(ValueError, match="parameter 'weight' is already flat"):
        flatten_parameters(other.conv)


def test_unflatten_gives_each_tensor_its_own_memory():
    flat_model, plain = make_net(), make_net()
    flat = flatten_parameters(flat_model)
    optimizers = [optimlab.Adam(m.parameters(), lr=0.01) for m in (flat_model, plain)]
    train(flat_model, optimizers[0], 2, set_to_none=False)
    train(plain, optimizers[1], 2, set_to_none=False)
    flat.unflatten()
    data, grad = flat.buffers[0].data, flat.buffers[0].grad
    for p in trained_params(flat_model):
        assert p.untyped_storage().data_ptr() != data.untyped_storage().data_ptr()
        if p.grad is not None:
            assert p.grad.untyped_storage().data_ptr() != grad.untyped_storage().data_ptr()
    assert not flat.intact()
    assert_same(flat_model, plain)
    for model, optimizer in zip((flat_model, plain), optimizers, strict=True):
        train(model, optimizer, 2, start=2)
    assert_same(flat_model, plain)
    again = flatten_parameters(flat_model)
    assert again is not flat and again.intact()


def test_moving_after_flattening_warns_and_a_new_call_flattens_again():
    flat_model, plain = make_net(), make_net()
    flat = flatten_parameters(flat_model)
    flat_model.double()
    plain.double()
    assert not flat.intact()
    with pytest.warns(UserWarning, match="parameter '[a-z.]+' has left its flat buffer"):
        loss_of(flat_model, 0).backward()
    loss_of(plain, 0).backward()
    assert_same(flat_model, plain)
    again = flatten_parameters(flat_model)
    assert again.intact() and again.buffers[0].data.dtype == torch.float64
    assert_adjacent(trained_params(flat_model))
    optimizers = [optimlab.Adam(m.parameters(), lr=0.01) for m in (flat_model, plain)]
    for model, optimizer in zip((flat_model, plain), optimizers, strict=True):
        train(model, optimizer, 2)
    assert_same(flat_model, plain)


def test_assign_loading_breaks_the_handle():
    model = make_net()
    flat = flatten_parameters(model)
    model.load_state_dict(make_net(1).state_dict(), assign=True)
    assert not flat.intact()
    assert flatten_parameters(model).intact()


def test_a_module_without_trainable_parameters_gives_an_empty_handle():
    flat = flatten_parameters(torch.nn.ReLU())
    assert flat.buffers == () and flat.params == ()


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got <class 'str'>"):
        flatten_parameters("model")
    with pytest.raises(ValueError, match="parameter 'weight' is uninitialized"):
        flatten_parameters(torch.nn.LazyLinear(3))


# -- DistributedDataParallel (2 gloo processes) ------------------------------------------

# the same math on a split batch: gradients are averaged in another order
SPLIT_BATCH = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    from flat_workers import ddp_flat_worker

    results = {}
    for bucket_view in (False, True):
        out = tmp_path_factory.mktemp(f"ddp_flat_{bucket_view}")
        launch(ddp_flat_worker, out, bucket_view)
        results[bucket_view] = [torch.load(out / f"ddp_flat_{bucket_view}_{r}.pt") for r in (0, 1)]
    return results


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")
@pytest.mark.parametrize("bucket_view", [False, True], ids=["grad_copy", "bucket_view"])
def test_ddp_flat_equals_ddp_plain_and_one_process(bucket_view, ddp_results):
    from flat_workers import DDP_ROWS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: the oracle reduces the same way
    try:
        oracle = {row: single_process_run(*OPTIMIZERS[row]) for row in DDP_ROWS}
    finally:
        torch.set_num_threads(threads)
    ranks = ddp_results[bucket_view]
    for (row, set_to_none), runs in ranks[0].items():
        params, flat_grads, intact = runs[True]
        assert intact
        # DDP with gradient_as_bucket_view=True points the grads into its own buckets
        assert flat_grads == [not bucket_view] * len(flat_grads), (row, set_to_none)
        for a, plain, other_rank, expected in zip(
            params, runs[False][0], ranks[1][row, set_to_none][True][0], oracle[row], strict=True
        ):
            torch.testing.assert_close(a, plain, rtol=0, atol=0)
            torch.testing.assert_close(a, other_rank, rtol=0, atol=0)
            torch.testing.assert_close(a, expected, **SPLIT_BATCH)
