"""Everything torch.optim users rely on, checked against torch.optim itself.

Checkpoints move both ways between torch.optim and optimlab and resume the
same trajectory; hooks, closures, zero_grad, param groups, deepcopy/pickle,
named parameters and ``differentiable=True`` behave as torch's do.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import optimlab
from optim_cases import LECTURE_CASES, TORCH_CASES, case_id, ours, theirs
from test_optim_parity import _params, run


def _roundtrip(state_dict: dict) -> dict:
    """Through bytes, loaded as a careful user would: ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _clone(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("direction", ["torch->optimlab", "optimlab->torch"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_checkpoint_resumes_across_libraries(case, direction):
    """Train N steps in one library, checkpoint, resume in the other: the same
    trajectory as never switching (bitwise, on the reference path)."""
    name, kwargs = case
    first, second = (theirs, ours) if direction == "torch->optimlab" else (ours, theirs)
    extra_first = {} if first is theirs else {"fused": False}
    extra_second = {} if second is theirs else {"fused": False}

    straight = _params(torch.float32)
    opt_straight = first(name, straight, kwargs, **extra_first)
    run(opt_straight, straight, 20, "some_none")

    head = _params(torch.float32)
    opt_head = first(name, head, kwargs, **extra_first)
    run(opt_head, head, 10, "some_none")
    checkpoint = _roundtrip(opt_head.state_dict())

    tail = _clone(head)
    opt_tail = second(name, tail, kwargs, **extra_second)
    opt_tail.load_state_dict(checkpoint)
    for step in range(10, 20):  # the same gradients as steps 10..19 of the straight run
        from test_optim_parity import _set_grads

        _set_grads(tail, step, "some_none", seed=0)
        opt_tail.step()
    for a, b in zip(tail, straight, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("case", TORCH_CASES + LECTURE_CASES, ids=case_id)
def test_state_dict_loads_weights_only_and_deepcopies(case):
    name, kwargs = case
    params = _params(torch.float64)
    opt = ours(name, params, kwargs, fused=False)
    run(opt, params, 5, "dense")
    loaded = _roundtrip(opt.state_dict())
    assert loaded["param_groups"][0]["params"] == opt.state_dict()["param_groups"][0]["params"]

    twin_params = _clone(params)
    twin = ours(name, twin_params, kwargs, fused=False)
    twin.load_state_dict(loaded)
    cloned = copy.deepcopy(opt)  # deepcopy copies params and state together
    pickled = pickle.loads(pickle.dumps(opt))
    for other, other_params in ((twin, twin_params),):
        run(other, other_params, 5, "dense", seed=1)
    run(opt, params, 5, "dense", seed=1)
    for a, b in zip(params, twin_params, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the copies share nothing with the original
    for copy_ in (cloned, pickled):
        for state, original in zip(copy_.state.values(), opt.state.values(), strict=True):
            for key, value in state.items():
                if torch.is_tensor(value) and value.numel() > 0:
                    assert value.data_ptr() != original[key].data_ptr()


def test_torch_checkpoint_gets_optimlab_defaults_for_its_own_options():
    params = _params(torch.float32)
    source = torch.optim.Adam(params, lr=0.01)
    run(source, params, 3, "dense")
    target = optimlab.Adam(_clone(params), lr=0.01, bias_correction=False, fused=False)
    target.load_state_dict(source.state_dict())
    assert target.param_groups[0]["bias_correction"] is False  # this optimizer's default
    assert target.param_groups[0]["lr"] == 0.01


def test_adamw_stays_decoupled_when_loading_an_adam_checkpoint():
    params = _params(torch.float32)
    source = torch.optim.Adam(params, weight_decay=0.1)
    run(source, params, 2, "dense")
    target = optimlab.AdamW(_clone(params))
    target.load_state_dict(source.state_dict())
    assert target.param_groups[0]["decoupled_weight_decay"] is True


def test_old_checkpoint_with_numeric_step_becomes_a_tensor():
    params = _params(torch.float32)
    opt = optimlab.NAdam(params, fused=False)
    run(opt, params, 2, "dense")
    state_dict = opt.state_dict()
    for state in state_dict["state"].values():
        state["step"], state["mu_product"] = 2.0, float(state["mu_product"])
    opt.load_state_dict(state_dict)
    assert all(torch.is_tensor(s["step"]) and s["step"].item() == 2.0 for s in opt.state.values())
    run(opt, params, 1, "dense")


# -- the Optimizer interface --------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
def test_step_hooks_closure_and_zero_grad(name):
    model = torch.nn.Linear(3, 1)
    opt = getattr(optimlab, name)(model.parameters(), lr=0.01)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o)))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o)))
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def closure():
        calls.append(("closure", None))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    assert [c[0] for c in calls] == ["pre", "closure", "post"]
    assert calls[0][1] is opt and calls[2][1] is opt
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))

    opt.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_add_param_group_and_named_parameters_like_torch(name):
    model_a, model_b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    model_b.load_state_dict(model_a.state_dict())
    opt_a = getattr(optimlab, name)([model_a.weight], lr=0.1, fused=False)
    opt_b = getattr(torch.optim, name)([model_b.weight], lr=0.1)
    opt_a.add_param_group({"params": [model_a.bias], "lr": 0.01})
    opt_b.add_param_group({"params": [model_b.bias], "lr": 0.01})
    for model, opt in ((model_a, opt_a), (model_b, opt_b)):
        for _ in range(3):
            opt.zero_grad()
            model(torch.ones(4, 3)).square().sum().backward()
            opt.step()
    torch.testing.assert_close(model_a.bias, model_b.bias, rtol=0, atol=0)
    assert opt_a.param_groups[1]["lr"] == 0.01

    named = getattr(optimlab, name)(model_a.named_parameters(), lr=0.1)
    assert named.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]


def test_param_in_two_groups_is_rejected_and_duplicate_warns_like_torch():
    p = torch.zeros(2, requires_grad=True)
    for module in (torch.optim, optimlab):
        with pytest.raises(ValueError, match="more than one parameter group"):
            module.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
        with pytest.warns(UserWarning, match="duplicate parameters"):
            module.SGD([p, p], lr=0.1)


# -- differentiable=True: autograd through the step ---------------------------

DIFFERENTIABLE_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1), ["momentum_buffer"]),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True), ["momentum_buffer"]),
    ("SGD", dict(lr=0.1, momentum=0.9, momentum_form="lecture"), ["velocity"]),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.1), ["sum"]),
    ("Adagrad", dict(lr=0.1, eps_inside_sqrt=True), ["sum"]),
    (
        "RMSprop",
        dict(lr=0.1, momentum=0.9, centered=True),
        ["square_avg", "momentum_buffer", "grad_avg"],
    ),
    ("RMSprop", dict(lr=0.1, weight_decay=0.1, maximize=True), ["square_avg"]),
    (
        "Adam",
        dict(lr=0.1, amsgrad=True, weight_decay=0.1),
        ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
    ),
    ("Adam", dict(lr=0.1, bias_correction=False), ["exp_avg", "exp_avg_sq"]),
    ("AdamW", dict(lr=0.1, weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
    ("NAdam", dict(lr=0.1, weight_decay=0.1), ["exp_avg", "exp_avg_sq"]),
]


def _differentiable_step(module, name, kwargs, keys, param, grad, *state_tensors):
    """One step as a function of (param, grad, state): the shape torch's own tests use."""
    p = param.clone()
    p.grad = grad
    opt = getattr(module, name)([p], differentiable=True, **kwargs)
    state = {k: t.clone() for k, t in zip(keys, state_tensors, strict=True)}
    if name != "SGD":
        state["step"] = torch.tensor(3.0, dtype=torch.float64)
    if name == "NAdam":
        state["mu_product"] = torch.tensor(0.5, dtype=torch.float64)
    opt.state[p].update(state)
    opt.step()
    return (p, *(opt.state[p][k] for k in keys))


@pytest.mark.parametrize("case", DIFFERENTIABLE_CASES, ids=lambda c: case_id(c[:2]))
def test_differentiable_step_has_correct_gradients(case):
    """gradcheck (finite differences) is the oracle for autograd through our step;
    where torch has the same option, the values also match torch's differentiable step."""
    name, kwargs, keys = case
    gen = torch.Generator().manual_seed(0)

    def tensor(low=0.5):
        return torch.rand(6, generator=gen, dtype=torch.float64).add_(low).requires_grad_()

    # square_avg > grad_avg ** 2, so centered RMSprop's variance is positive
    inputs = (tensor(), tensor(), *(tensor(3.0 if k == "square_avg" else 0.5) for k in keys))
    torch.autograd.gradcheck(
        lambda *xs: _differentiable_step(optimlab, name, kwargs, keys, *xs), inputs
    )
    if (name, kwargs) in TORCH_CASES or not set(kwargs) & {
        "momentum_form",
        "eps_inside_sqrt",
        "bias_correction",
    }:
        ours_out = _differentiable_step(optimlab, name, kwargs, keys, *inputs)
        torch_out = _differentiable_step(torch.optim, name, kwargs, keys, *inputs)
        for a, b in zip(ours_out, torch_out, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_differentiable_lr_gets_a_gradient():
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    p = w.clone()
    p.grad = torch.full((3,), 2.0, dtype=torch.float64)
    optimlab.SGD([p], lr=lr, differentiable=True).step()
    p.sum().backward()
    assert lr.grad.item() == pytest.approx(-6.0)  # d/dlr sum(w - lr * g) = -sum(g)
