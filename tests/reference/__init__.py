"""Independent float64 NumPy references of the optimizers, transcribed from ALGORITHMS.md.

Every function takes (theta0, grads, *, lr_multipliers=None, **hyper-parameters) and returns one
dict per step t = 1..len(grads), taken after that step: "step", "param" and the state under
torch.optim's names. The exception is swats(), which takes a whole param group (a list of params,
grads[t-1][i]) and returns, per step, a list of such dicts, one per param. No torch, no adamkit.
"""

from .adagrad import adagrad
from .adam import adam, adamw, amsgrad
from .adamax import adamax
from .nadam import nadam
from .ndadam import ndadam
from .rmsprop import rmsprop
from .sgd import sgd
from .swats import swats

__all__ = [
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "nadam",
    "ndadam",
    "rmsprop",
    "sgd",
    "swats",
]
