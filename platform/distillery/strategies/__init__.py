"""Distillation strategies, by the name the trainer runs.

A strategy says which batch columns it needs (`needs`), may wrap the student in the module
DeepSpeed trains (`wrap`), turns a forward's output into named loss terms (`loss_terms`)
weighted by `weights`, and says which state dicts to export (`export`); see base.py.
`distill.strategy: progressive` runs `response` at each stage of its chain.
"""

from __future__ import annotations

from distillery.strategies.base import Strategy
from distillery.strategies.feature import FeatureStrategy
from distillery.strategies.multi_teacher import MultiTeacherStrategy
from distillery.strategies.online import OnlineStrategy
from distillery.strategies.response import ResponseStrategy
from distillery.strategies.supervised import SupervisedStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "response": ResponseStrategy,
    "feature": FeatureStrategy,
    "multi_teacher": MultiTeacherStrategy,
    "online": OnlineStrategy,
    "supervised": SupervisedStrategy,
}


def build_strategy(name: str, **params) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {sorted(STRATEGIES)}") from None
    return cls(**params)
