"""AutoSteer: steer LLMs with activation vectors, and search for the best steering.

Public API (everything else is private)::

    from autosteer import Steer, DecaySchedule, CosineSchedule, WarmupSchedule
    from autosteer import SteerSearchSpace, SteerCandidate, AutoSteerSearch
    from autosteer import SteerEvaluator, AutoSteerRunner, read_log, plot_history
    from autosteer import RayExecutor, load_model, Concept
    from autosteer import LocalSearch, RandomSearch, TPE          # strategies (former names:
                                                                  # AutoSteerSearch, TPESearch)
    from autosteer import MeanRule, PairedRule                    # keep rules
    from autosteer import TaskAccuracy, Perplexity, CustomMetric, ConceptRate, Fluency, KLNeutral
    from autosteer import SteeredAnswer, SteeredConcept               # concept metrics (steered_answer: the default)

The errors and the schedules load eagerly (they need only the C core and
NumPy); ``Steer``, the search loop, the embedded model and plotting load on
first use, so ``import autosteer`` does not import torch.
"""

from __future__ import annotations

import importlib

from .errors import (
    ArgumentTypeError,
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
from .steering.schedules import CosineSchedule, DecaySchedule, WarmupSchedule, schedule_from_dict

__version__ = "0.1.0"

_LAZY = {
    "Steer": "autosteer.steering.steer",
    "SteeringVector": "autosteer.steering.vectors",
    "SteerSearchSpace": "autosteer.search.space",
    "SteerCandidate": "autosteer.search.candidate",
    "SteerVector": "autosteer.search.candidate",
    "Strategy": "autosteer.search.strategies.base",
    "LocalSearch": "autosteer.search.strategies.local",
    "AutoSteerSearch": "autosteer.search.strategies.local",
    "RandomSearch": "autosteer.search.strategies.random_search",
    "TPE": "autosteer.search.strategies.tpe",
    "TPESearch": "autosteer.search.strategies.tpe",
    "KeepRule": "autosteer.search.keep",
    "MeanRule": "autosteer.search.keep",
    "PairedRule": "autosteer.search.keep",
    "Metric": "autosteer.search.metrics",
    "MetricResult": "autosteer.search.metrics",
    "TaskAccuracy": "autosteer.search.metrics",
    "Perplexity": "autosteer.search.metrics",
    "CustomMetric": "autosteer.search.metrics",
    "ConceptRate": "autosteer.search.metrics",
    "Fluency": "autosteer.search.metrics",
    "SteeredConcept": "autosteer.search.metrics",
    "SteeredAnswer": "autosteer.search.metrics",
    "KLNeutral": "autosteer.search.metrics",
    "RayExecutor": "autosteer.search.executor",
    "InProcessExecutor": "autosteer.search.executor",
    "SearchExhaustedError": "autosteer.search.strategies.base",
    "load_model": "autosteer.models",
    "Concept": "autosteer.steering.concept",
    "SteerEvaluator": "autosteer.search.evaluator",
    "AutoSteerRunner": "autosteer.search.runner",
    "SteerResults": "autosteer.search.results",
    "TrialRecord": "autosteer.search.trial",
    "read_log": "autosteer.search.log",
    "plot_history": "autosteer.search.plot",
    "load_organism": "autosteer.organism",
    "find_decoder_layers": "autosteer.steering.layers",
}

__all__ = [
    "DecaySchedule",
    "CosineSchedule",
    "WarmupSchedule",
    "schedule_from_dict",
    "AutoSteerError",
    "InvalidArgumentError",
    "ArgumentTypeError",
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
