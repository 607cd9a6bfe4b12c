"""adamkit: the Adam family of optimizers for PyTorch.

Exact to the papers, drop-in for torch.optim.
"""

from adamkit.algorithms.adagrad import Adagrad
from adamkit.algorithms.adam import Adam, AdamW, AMSGrad
from adamkit.algorithms.adamax import Adamax
from adamkit.algorithms.nadam import NAdam
from adamkit.algorithms.rmsprop import RMSprop
from adamkit.algorithms.sgd import SGD
from adamkit.optimizer import RuleOptimizer
from adamkit.rule import Rule

__all__ = [
    "SGD",
    "AMSGrad",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RMSprop",
    "Rule",
    "RuleOptimizer",
]
__version__ = "0.1.0"
