"""Distillation strategies, by the name a spec writes in `distill.strategy`.

A strategy says which teacher outputs it needs (`needs`), turns a batch into named loss terms
(`loss_terms`) and gives each term its weight (`weights`); the trainer sums and logs them.
"""

from __future__ import annotations

from distillery.strategies.response import ResponseStrategy
from distillery.strategies.supervised import SupervisedStrategy

STRATEGIES = {
    "response": ResponseStrategy,
    "supervised": SupervisedStrategy,
}


def build_strategy(name: str, **params):
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; valid: {sorted(STRATEGIES)}") from None
    return cls(**params)
