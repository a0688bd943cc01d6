"""What the runner needs from a problem, and the pieces the data-set problems share.

A :class:`Problem` is a description (name, text for the report, the loss
threshold that defines "steps to target", a learning-rate guess per optimizer
family) plus :meth:`Problem.make`, which builds a :class:`Task` for one seed:
the parameters, a mini-batch per step, the training loss of a batch, and an
evaluation on held-out data.  Everything random in a task comes from
generators seeded by the run's seed, so a run is a pure function of its config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClassificationTask", "Problem", "Task", "split_indices"]

#: Optimizer families that share a learning-rate scale (momentum in torch's form,
#: without dampening, multiplies the step by about 1 / (1 - momentum) = 10).
FAMILIES = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


class Task(ABC):
    """One seeded instance of a problem, ready to train."""

    params: list[Tensor]
    _drawn: tuple[int, Any] | None = None

    def batch(self, step: int) -> Any:
        """The mini-batch (or gradient-noise draw) for ``step``; the same on every call.

        One draw per step, remembered, so a closure evaluated twice in a step sees one batch.
        """
        if self._drawn is None or self._drawn[0] != step:
            self._drawn = (step, self.draw())
        return self._drawn[1]

    @abstractmethod
    def draw(self) -> Any:
        """A new mini-batch (from the task's own seeded generator)."""

    @abstractmethod
    def loss(self, batch: Any) -> Tensor:
        """The training loss of ``batch`` at the current parameters (differentiable)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics: ``val_loss`` and, for classifiers, ``val_acc``."""

    def position(self) -> Tensor | None:
        """The current point(s), shape (K, 2), for problems drawn as trajectories."""
        return None

    def cast(self, dtype: torch.dtype) -> None:
        """Store the parameters in ``dtype`` and compute in it (problems with ``has_model``)."""
        raise ValueError(f"param_dtype {dtype}: {type(self).__name__} has no model to cast")


@dataclass(frozen=True)
class Problem(ABC):
    """A named problem; ``settings`` holds everything besides the seed that shapes a run."""

    name: str
    title: str
    description: str
    #: steps-to-target counts evaluation steps until ``val_loss <= target``
    target: float
    target_text: str
    #: a learning rate that trains well, per family; the lr grid is centred on it
    lr_center: Mapping[str, float]
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: the known smallest validation loss, if any (plots show the distance to it)
    optimum: float | None = None
    has_accuracy: bool = False
    #: a neural model whose weights can be stored in bfloat16 (:meth:`Task.cast`)
    has_model: bool = False
    #: 2-D functions: trajectories are recorded and drawn over contours
    is_2d: bool = False
    #: evaluations per run (None: after every step, for the cheap 2-D functions)
    evals: int | None = 25
    #: rough cost of one step in milliseconds on one core (the progress bars' first guess;
    #: the duration estimate measures instead, see optimlab.lab.estimate)
    step_ms: float = 0.3
    #: how the report shows a loss: multiplied by ``loss_scale``, in ``loss_unit``
    loss_scale: float = 1.0
    loss_unit: str = ""
    #: a published result for this problem: (accuracy, who, where)
    published: tuple[float, str] | None = None

    @abstractmethod
    def make(self, seed: int, settings: Mapping[str, Any]) -> Task:
        """Build the task for ``seed`` with ``settings`` (this problem's, maybe overridden)."""


def split_indices(n: int, n_val: int, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed train/validation split of ``range(n)``, the same on every machine."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


class ClassificationTask(Task):
    """A model trained with cross-entropy on in-memory tensors, mini-batches drawn with replacement.

    Batches are sampled by a generator seeded from the run's seed (the noise of
    mini-batch SGD); the model's initial weights come from ``torch.manual_seed``
    set by the runner before :meth:`Problem.make` is called.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        x_val: Tensor,
        y_val: Tensor,
        batch_size: int,
        seed: int,
    ) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.x, self.y, self.x_val, self.y_val = x, y, x_val, y_val
        self.batch_size = batch_size
        self._generator = torch.Generator().manual_seed(1000 + seed)

    def draw(self) -> Tensor:
        return torch.randint(len(self.y), (self.batch_size,), generator=self._generator)

    def cast(self, dtype: torch.dtype) -> None:
        """A model in ``dtype`` computes in it: weights, inputs and activations; the loss is
        taken in float32 from its logits."""
        self.model.to(dtype)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.x, self.x_val = self.x.to(dtype), self.x_val.to(dtype)

    def loss(self, batch: Tensor) -> Tensor:
        self.model.train()
        return F.cross_entropy(self.model(self.x[batch]).float(), self.y[batch])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        logits = self.model(self.x_val).float()
        return {
            "val_loss": F.cross_entropy(logits, self.y_val).item(),
            "val_acc": (logits.argmax(1) == self.y_val).float().mean().item(),
        }
