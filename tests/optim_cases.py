"""The optimizer test table: (class name, constructor kwargs) rows shared by the optimizer tests.

A new option is one new row.  ``torch.optim`` has a class of each name, which is
the oracle; rows marked ``LECTURE`` use options torch does not have.
"""

from __future__ import annotations

import torch

import optimlab

TORCH_CASES: list[tuple[str, dict]] = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=torch.tensor(0.05), momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1)),
    ("Adagrad", dict(lr=torch.tensor(0.1), eps=1e-3, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=torch.tensor(0.01), eps=1e-3)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, weight_decay=0.05)),
    ("Adam", dict(lr=torch.tensor(0.01), amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("NAdam", dict(lr=torch.tensor(0.01), betas=(0.8, 0.99))),
]

LECTURE_CASES: list[tuple[str, dict]] = [
    ("SGD", dict(lr=0.05, momentum=0.9, momentum_form="lecture")),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, momentum_form="lecture")),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, maximize=True, momentum_form="lecture")),
    ("Adagrad", dict(lr=0.1, eps_inside_sqrt=True)),
    ("RMSprop", dict(lr=0.01, eps_inside_sqrt=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, eps_inside_sqrt=True)),
    ("Adam", dict(lr=0.01, bias_correction=False)),
    ("AdamW", dict(lr=0.01, bias_correction=False, amsgrad=True)),
]


def case_id(case: tuple[str, dict]) -> str:
    name, kwargs = case
    parts = [f"{k}={'T' if isinstance(v, torch.Tensor) else v}" for k, v in kwargs.items()]
    return f"{name}({','.join(parts)})"


def fresh(kwargs: dict) -> dict:
    """A copy of kwargs whose tensor hyperparameters are not shared between optimizers."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def make(module, name: str, params, kwargs: dict, **extra):
    return getattr(module, name)(params, **fresh(kwargs), **extra)


def ours(name: str, params, kwargs: dict, **extra):
    return make(optimlab, name, params, kwargs, **extra)


def theirs(name: str, params, kwargs: dict, **extra):
    return make(torch.optim, name, params, kwargs, **extra)
