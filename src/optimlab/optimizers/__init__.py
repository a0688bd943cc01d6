"""The lecture's optimizers, each a drop-in subclass of :class:`torch.optim.Optimizer`."""

from .adagrad import Adagrad
from .adam import Adam, AdamW
from .base import Optimizer
from .nadam import NAdam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "Optimizer"]
