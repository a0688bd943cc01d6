"""The lab's problems train (their loss falls), are deterministic, and are what their docs say."""

from __future__ import annotations

import math

import pytest
import torch

from optimlab.lab import catalog, plan, problems, train
from optimlab.lab.problems import functions2d, quadratic


@pytest.fixture(autouse=True)
def one_thread():
    """The lab trains with one thread (see optimlab.lab.runner); restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# (optimizer, lr, steps) that make each problem's loss fall in a short run
SHORT = {
    "quadratic_deep": ("sgd", 0.01, 60),
    "digits_logreg": ("adam", 0.03, 60),
    "digits_mlp": ("adam", 5e-3, 60),
    "mnist1d_cnn": ("adam", 0.01, 60),
    "charlm": ("adam", 5e-3, 25),
}


def _run(problem: str, optimizer: str, lr: float, steps: int, seed: int = 0, schedule="constant"):
    p = problems.get(problem)
    group = train.group_config(problem, p.settings, optimizer, schedule, steps)
    return train.train(train.run_config(group, lr, seed))


@pytest.mark.parametrize("name", problems.names())
def test_each_problem_trains_and_its_loss_falls(name):
    optimizer, lr, steps = SHORT.get(name, ("adam", 0.05, 60))
    result = _run(name, optimizer, lr, steps)
    assert result.status == "finished"
    _, first = result.series["val_loss"][0]
    _, last = result.series["val_loss"][-1]
    assert last < first
    assert math.isfinite(result.final_train_loss)
    for key in ("train_loss", "lr", "update", "eff_lr"):
        assert result.series[key], key
    assert ("trajectory" in result.arrays) == problems.get(name).is_2d


def test_a_run_is_a_pure_function_of_its_config():
    a = _run("digits_mlp", "momentum", 0.05, 30, seed=3)
    b = _run("digits_mlp", "momentum", 0.05, 30, seed=3)
    c = _run("digits_mlp", "momentum", 0.05, 30, seed=4)
    assert a.series["train_loss"] == b.series["train_loss"]
    assert a.series["val_loss"] == b.series["val_loss"]
    assert a.series["train_loss"] != c.series["train_loss"]


def test_divergence_stops_the_run():
    result = _run("ill_conditioned", "sgd", 1.0, 200)  # lr > 2/50: unstable
    assert result.status == "diverged"
    assert result.steps_done < 200
    assert result.final_train_loss is None and result.last("val_loss") is None


def test_noisy_gradient_is_exact_gradient_plus_noise_and_loss_is_exact():
    p = problems.get("rosenbrock_noisy")
    task = p.make(0, p.settings)
    batch = task.batch(0)
    assert task.batch(0) is batch  # one draw per step
    loss = task.loss(batch)
    loss.backward()
    w = task.w.detach().clone().requires_grad_(True)
    exact = functions2d.rosenbrock(w[:, 0], w[:, 1]).sum()
    exact.backward()
    assert loss.item() == pytest.approx(exact.item())
    assert torch.allclose(task.w.grad, w.grad + batch)


def test_rastrigin_points_do_not_interact():
    p = problems.get("rastrigin")
    task = p.make(1, p.settings)
    assert task.w.shape == (16, 2)
    task.loss(task.batch(0)).backward()
    w = task.w.detach()[3:4].clone().requires_grad_(True)
    functions2d.rastrigin(w[:, 0], w[:, 1]).sum().backward()
    assert torch.allclose(task.w.grad[3], w.grad[0])


@pytest.mark.parametrize(
    "function, minimum, value",
    [
        (functions2d.rosenbrock, (1.0, 1.0), 0.0),
        (functions2d.beale, (3.0, 0.5), 0.0),
        (functions2d.saddle, (0.0, 1.0), -0.25),
        (functions2d.ill_conditioned, (0.0, 0.0), 0.0),
        (functions2d.rastrigin, (0.0, 0.0), 0.0),
    ],
)
def test_2d_minima_are_the_documented_ones(function, minimum, value):
    w = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
    f = function(w[0], w[1])
    f.backward()
    assert f.item() == pytest.approx(value, abs=1e-12)
    assert torch.allclose(w.grad, torch.zeros(2, dtype=torch.float64), atol=1e-9)


def test_quadratic_deep_spectrum():
    eig = torch.linalg.eigvalsh(quadratic.hessian())
    assert int(((eig >= 0) & (eig <= 1)).sum()) == 90
    assert int(((eig >= 30) & (eig <= 60)).sum()) == 10


def test_lr_grid_is_half_decades_around_the_centre():
    assert plan.lr_grid(0.01, 3) == [0.00316, 0.01, 0.0316]
    assert plan.lr_grid(1.0, 1) == [1.0]
    assert len(plan.lr_grid(0.1, 7)) == 7


@pytest.mark.parametrize("name", list(catalog.SCHEDULES))
def test_every_schedule_starts_and_ends_sensibly(name):
    schedule = catalog.SCHEDULES[name].make(0.1, 100)
    values = [schedule(t) for t in range(101)]
    assert max(values) == pytest.approx(0.1)
    assert all(0 <= v <= 0.1 + 1e-12 for v in values)
    if name.startswith("warmup"):
        assert values[0] == 0.0
    if name in ("cosine", "linear", "warmup_cosine", "warmup_linear"):
        assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_every_problem_has_a_lr_guess_for_every_optimizer_family():
    for p in problems.registry().values():
        for o in catalog.OPTIMIZERS.values():
            assert o.family in p.lr_center, (p.name, o.name)


# how closely the lecture's form follows torch's in 20 steps of the digits MLP at a constant lr:
# momentum's velocity is torch's buffer times -lr (rounding only); ε inside the root parts
# from ε outside where √s nears √ε, and a few nearly constant pixels give such tiny gradients
@pytest.mark.parametrize(
    "form, rel", [("momentum_lecture", 1e-5), ("adagrad_eps_inside", 2e-2),
                  ("rmsprop_eps_inside", 5e-2), ("nesterov_lookahead", None)],
)  # fmt: skip
def test_the_lecture_forms_train_like_torchs_under_a_constant_lr(form, rel):
    torch_form = catalog.FORMS[form]
    lr = problems.get("digits_mlp").lr_center[catalog.OPTIMIZERS[form].family]
    a = _run("digits_mlp", torch_form, lr, 20)
    b = _run("digits_mlp", form, lr, 20)
    assert b.status == "finished"
    va, vb = (dict(r.series["val_loss"]) for r in (a, b))
    steps = sorted(va)
    assert vb[steps[-1]] < 0.7 * vb[0]
    if rel is not None:  # Nesterov's forms hold different points (βv apart): see claims L2
        assert [vb[s] for s in steps] == pytest.approx([va[s] for s in steps], rel=rel)
