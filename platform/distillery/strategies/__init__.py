"""Distillation strategies, by the name `distill.strategy` gives them (and `supervised`, how
teachers and baselines train).

A strategy is one module: its frozen parameters (`Params.from_spec`), what it needs from the
driver (which teachers and layers teacher-infer caches, how `distill` runs: progressive's
teacher-assistant chain, online's peers), and what the workers run: the batch columns it
`needs`, the module it may `wrap` the student in, the named loss terms it computes
(`loss_terms`, weighted by `weights`) and the state dicts it exports (`export`); see base.py.
"""

from __future__ import annotations

from distillery.strategies.base import Strategy
from distillery.strategies.feature import FeatureStrategy
from distillery.strategies.multi_teacher import MultiTeacherStrategy
from distillery.strategies.online import OnlineStrategy
from distillery.strategies.progressive import ProgressiveStrategy
from distillery.strategies.response import ResponseStrategy
from distillery.strategies.supervised import SupervisedStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "response": ResponseStrategy,
    "feature": FeatureStrategy,
    "progressive": ProgressiveStrategy,
    "multi_teacher": MultiTeacherStrategy,
    "online": OnlineStrategy,
    "supervised": SupervisedStrategy,
}


def build_strategy(name: str, **params) -> Strategy:
    """The worker's strategy `name`, from its parameters' fields (TrainJob.strategy_params)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {sorted(STRATEGIES)}") from None
    return cls(cls.Params(**params))
