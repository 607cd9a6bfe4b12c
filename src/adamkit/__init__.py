"""adamkit: the Adam family of optimizers for PyTorch.

Exact to the papers, drop-in for torch.optim.
"""

from adamkit import schedules
from adamkit.algorithms.adagrad import Adagrad
from adamkit.algorithms.adam import Adam, AdamW, AMSGrad
from adamkit.algorithms.adamax import Adamax
from adamkit.algorithms.nadam import NAdam
from adamkit.algorithms.ndadam import NDAdam, normalize_vectors_
from adamkit.algorithms.rmsprop import RMSprop
from adamkit.algorithms.sgd import SGD, SGDW
from adamkit.algorithms.swats import SWATS, SwitchPoint
from adamkit.optimizer import RuleOptimizer
from adamkit.param_groups import weight_decay_groups
from adamkit.rule import Rule

__all__ = [
    "SGD",
    "SGDW",
    "SWATS",
    "AMSGrad",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "NDAdam",
    "RMSprop",
    "Rule",
    "RuleOptimizer",
    "SwitchPoint",
    "normalize_vectors_",
    "schedules",
    "weight_decay_groups",
]
__version__ = "0.1.0"
