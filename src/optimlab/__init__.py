"""optimlab: the lecture's optimizers and schedules as exact drop-in torch.optim replacements."""

from .flat import flatten_parameters
from .optimizers import SGD, Adagrad, Adam, AdamW, NAdam, Optimizer, RMSprop
from .release import release_gradients

__version__ = "0.1.0"
__all__ = [
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Optimizer", "flatten_parameters",
    "release_gradients",
]  # fmt: skip
