"""Bad input raises at construction, naming the argument and the value.

Where torch.optim raises for the same input, optimlab raises the same exception
type (and its message starts the same way); where torch accepts nonsense
(a NaN lr for SGD, alpha > 1, a negative lr inside a param group), optimlab
still refuses it.
"""

from __future__ import annotations

import math

import pytest
import torch

import optimlab

NAN, INF = math.nan, math.inf

# (class, kwargs, exception, regex the message must match, torch raises the same type too)
CASES = [
    ("SGD", dict(lr=-0.1), ValueError, r"Invalid learning rate: -0.1 \(lr must", True),
    ("SGD", dict(lr=NAN), ValueError, r"Invalid learning rate: nan", False),
    ("SGD", dict(lr=INF), ValueError, r"Invalid learning rate: inf", False),
    ("SGD", dict(lr=torch.tensor([0.1, 0.2])), ValueError, r"Tensor lr must be 1-element", True),
    ("SGD", dict(lr="0.1"), TypeError, r"lr must be a number, got str", True),
    ("SGD", dict(lr=0.1, momentum=-0.5), ValueError, r"Invalid momentum value: -0.5", True),
    ("SGD", dict(lr=0.1, weight_decay=-1), ValueError, r"Invalid weight_decay value: -1", True),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=1.5), ValueError, r"dampening value: 1.5", False),
    ("SGD", dict(lr=0.1, nesterov=True), ValueError, r"Nesterov momentum requires", True),
    (
        "SGD",
        dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        ValueError,
        r"Nesterov momentum requires a momentum and zero dampening",
        True,
    ),
    ("SGD", dict(lr=0.1, momentum_form="heavy"), ValueError, r"momentum_form: 'heavy'", False),
    (
        "SGD",
        dict(lr=0.1, momentum=0.9, dampening=0.5, momentum_form="lecture"),
        ValueError,
        r"dampening value: 0.5 \(momentum_form='lecture'",
        False,
    ),
    (
        "SGD",
        dict(lr=0.1, momentum=0.9, nesterov_form="lookahead"),
        ValueError,
        r"requires nesterov=True",
        False,
    ),
    ("SGD", dict(lr=0.1, fused=True, differentiable=True), RuntimeError, r"`fused` does not", True),
    (
        "SGD",
        dict(lr=0.1, fused=True, foreach=True),
        RuntimeError,
        r"cannot be `True` together",
        True,
    ),
    ("Adagrad", dict(lr=-1.0), ValueError, r"Invalid learning rate: -1.0", True),
    ("Adagrad", dict(lr_decay=-0.1), ValueError, r"Invalid lr_decay value: -0.1", True),
    ("Adagrad", dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay value: -0.1", True),
    (
        "Adagrad",
        dict(initial_accumulator_value=-1),
        ValueError,
        r"Invalid initial_accumulator_value value: -1",
        True,
    ),
    ("Adagrad", dict(eps=-1e-10), ValueError, r"Invalid epsilon value: -1e-10", True),
    ("RMSprop", dict(lr=-1e-2), ValueError, r"Invalid learning rate: -0.01", True),
    ("RMSprop", dict(alpha=-0.5), ValueError, r"Invalid alpha value: -0.5", True),
    ("RMSprop", dict(alpha=1.5), ValueError, r"Invalid alpha value: 1.5 \(alpha must be in", False),
    ("RMSprop", dict(eps=-1.0), ValueError, r"Invalid epsilon value: -1.0", True),
    ("RMSprop", dict(momentum=-0.9), ValueError, r"Invalid momentum value: -0.9", True),
    ("RMSprop", dict(weight_decay=-0.9), ValueError, r"Invalid weight_decay value: -0.9", True),
    ("Adam", dict(lr=-1e-3), ValueError, r"Invalid learning rate: -0.001", True),
    ("Adam", dict(eps=-1e-8), ValueError, r"Invalid epsilon value: -1e-08", True),
    ("Adam", dict(betas=(1.0, 0.999)), ValueError, r"Invalid beta parameter at index 0: 1.0", True),
    ("Adam", dict(betas=(0.9, -0.1)), ValueError, r"Invalid beta parameter at index 1: -0.1", True),
    (
        "Adam",
        dict(betas=(torch.tensor(0.9), 0.999)),
        ValueError,
        r"betas must be either both floats or both Tensors",
        True,
    ),
    ("Adam", dict(betas=(0.9,)), TypeError, r"betas must be a pair", False),
    ("Adam", dict(weight_decay=-1e-2), ValueError, r"Invalid weight_decay value: -0.01", True),
    ("Adam", dict(fused=True, differentiable=True), RuntimeError, r"`fused` does not", True),
    ("AdamW", dict(betas=(0.9, 1.0)), ValueError, r"Invalid beta parameter at index 1: 1.0", True),
    ("AdamW", dict(weight_decay=-1.0), ValueError, r"Invalid weight_decay value: -1.0", True),
    ("NAdam", dict(lr=-2e-3), ValueError, r"Invalid learning rate: -0.002", True),
    ("NAdam", dict(momentum_decay=-1.0), ValueError, r"Invalid momentum_decay value: -1.0", True),
    (
        "NAdam",
        dict(betas=(-0.1, 0.9)),
        ValueError,
        r"Invalid beta parameter at index 0: -0.1",
        True,
    ),
]


def _param():
    return torch.zeros(3, requires_grad=True)


@pytest.mark.parametrize(
    "name,kwargs,error,message,torch_too",
    CASES,
    ids=[f"{c[0]}-{'-'.join(c[1])}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_hyperparameter_raises_at_construction(name, kwargs, error, message, torch_too):
    with pytest.raises(error, match=message):
        getattr(optimlab, name)([_param()], **kwargs)
    if torch_too:
        torch_kwargs = {k: v for k, v in kwargs.items()}
        with pytest.raises(error):
            getattr(torch.optim, name)([_param()], **torch_kwargs)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
def test_bad_value_in_a_param_group_is_refused(name):
    """torch checks only the constructor's arguments; optimlab checks every group."""
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1 \(lr must"):
        getattr(optimlab, name)([{"params": [_param()], "lr": -1}], lr=0.1)
    opt = getattr(optimlab, name)([_param()], lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid weight_decay value: -2"):
        opt.add_param_group({"params": [_param()], "weight_decay": -2})
    assert len(opt.param_groups) == 1  # the bad group was not half-added


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
@pytest.mark.parametrize(
    "params,error,message",
    [
        (torch.zeros(3, requires_grad=True), TypeError, "iterable of Tensors or dicts"),
        ([], ValueError, "empty parameter list"),
        ([1.0, 2.0], TypeError, "can only optimize Tensors"),
        ([{"params": {torch.zeros(2, requires_grad=True)}}], TypeError, "ordered collections"),
        ([torch.zeros(2, requires_grad=True) * 2], ValueError, "can't optimize a non-leaf Tensor"),
    ],
    ids=["bare-tensor", "empty", "numbers", "group-set", "non-leaf"],
)
def test_bad_params_raise_like_torch(name, params, error, message):
    for module in (torch.optim, optimlab):
        with pytest.raises(error, match=message):
            getattr(module, name)(params, lr=0.1)
