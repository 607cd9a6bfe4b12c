"""The lab: the papers' claims as experiments anyone reruns with one command.

``adamkit lab list`` lists them, ``adamkit lab run NAME`` runs one, ``adamkit demo`` runs the
quick set of every experiment and writes the report (``index.html``). Each experiment is an
:class:`~adamkit.lab.frame.Experiment` in :mod:`adamkit.lab.experiments`.
"""

from __future__ import annotations

import importlib

from adamkit.lab.frame import Experiment, Settings, run_experiment

# the experiments, in the report's order: the module of adamkit.lab.experiments that defines
# each (as EXPERIMENT)
MODULES = {
    "reddi": "reddi",
    "properties": "properties",
    "trajectories": "trajectories",
    "kingma-ba": "kingma_ba",
    "bias-correction": "bias_correction",
    "weight-decay": "weight_decay",
    "generalization": "generalization",
    "restarts": "restarts",
    "variants": "variants",
    "state-precision": "state_precision",
}


def experiment(name: str) -> Experiment:
    """The experiment called ``name`` (KeyError for an unknown name)."""
    module = importlib.import_module(f"adamkit.lab.experiments.{MODULES[name]}")
    return module.EXPERIMENT


__all__ = ["MODULES", "Experiment", "Settings", "experiment", "run_experiment"]
