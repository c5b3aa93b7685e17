"""The data sources a spec's `data.source` names, each loaded into the one `Splits` shape."""

from __future__ import annotations

from distillery.config import DataSpec
from distillery.data.mnist1d import load_mnist1d
from distillery.data.splits import Splits
from distillery.data.tables import load_table

LOADERS = {"mnist1d": load_mnist1d, "parquet": load_table, "csv": load_table}
"""`data.source` -> loader; the spec's validation already limits the source to these names."""


def load_splits(spec: DataSpec) -> Splits:
    return LOADERS[spec.source](spec)
