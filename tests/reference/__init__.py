"""Independent float64 NumPy references of the optimizers, transcribed from ALGORITHMS.md.

Every function takes (theta0, grads, *, lr_multipliers=None, **hyper-parameters) and returns one
dict per step t = 1..len(grads), taken after that step: "step", "param" and the state under
torch.optim's names. No torch, no adamkit.
"""

from .adagrad import adagrad
from .adam import adam, adamw, amsgrad
from .adamax import adamax
from .nadam import nadam
from .rmsprop import rmsprop
from .sgd import sgd

__all__ = ["adagrad", "adam", "adamax", "adamw", "amsgrad", "nadam", "rmsprop", "sgd"]
