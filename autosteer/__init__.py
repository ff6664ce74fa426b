"""AutoSteer: steer LLMs with activation vectors, and search for the best steering.

Public API (everything else is private)::

    from autosteer import Steer, DecaySchedule, CosineSchedule, WarmupSchedule
    from autosteer import SteerSearchSpace, SteerCandidate, AutoSteerSearch
    from autosteer import SteerEvaluator, AutoSteerRunner, read_log, plot_history
    from autosteer import RayExecutor, TPESearch, RandomSearch, load_model, Concept

The errors and the schedules load eagerly (they need only the C core and
NumPy); ``Steer``, the search loop, the embedded model and plotting load on
first use, so ``import autosteer`` does not import torch.
"""

from __future__ import annotations

import importlib

from .errors import (
    AutoSteerError,
    InvalidArgumentError,
    LayerIndexError,
    LogFormatError,
    ScheduleError,
    SearchSpaceError,
    SteerStateError,
    UnsupportedModelError,
    VectorShapeError,
)
from .schedules import CosineSchedule, DecaySchedule, WarmupSchedule, schedule_from_dict

__version__ = "0.1.0"

_LAZY = {
    "Steer": "autosteer.steer",
    "SteerSearchSpace": "autosteer.space",
    "SteerCandidate": "autosteer.candidate",
    "SteerVector": "autosteer.candidate",
    "AutoSteerSearch": "autosteer.strategies.local",
    "RandomSearch": "autosteer.strategies.random_search",
    "TPESearch": "autosteer.strategies.tpe",
    "RayExecutor": "autosteer.executor",
    "InProcessExecutor": "autosteer.executor",
    "SearchExhaustedError": "autosteer.strategies.base",
    "load_model": "autosteer.models",
    "Concept": "autosteer.concept",
    "SteerEvaluator": "autosteer.evaluator",
    "AutoSteerRunner": "autosteer.runner",
    "SteerResults": "autosteer.results",
    "TrialRecord": "autosteer.trial",
    "read_log": "autosteer.log",
    "plot_history": "autosteer.plot",
    "load_organism": "autosteer.organism",
    "find_decoder_layers": "autosteer.layers",
}

__all__ = [
    "DecaySchedule",
    "CosineSchedule",
    "WarmupSchedule",
    "schedule_from_dict",
    "AutoSteerError",
    "InvalidArgumentError",
    "LayerIndexError",
    "LogFormatError",
    "ScheduleError",
    "SearchSpaceError",
    "SteerStateError",
    "UnsupportedModelError",
    "VectorShapeError",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autosteer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
