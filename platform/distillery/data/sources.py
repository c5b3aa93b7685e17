"""The data sources a spec's `data.source` names, each loaded into the one `Splits` shape."""

from __future__ import annotations

import hashlib
from importlib.metadata import version

from distillery.config import DataSpec, TableData
from distillery.data.mnist1d import load_mnist1d
from distillery.data.splits import Splits
from distillery.data.tables import file_listing, load_table

LOADERS = {"mnist1d": load_mnist1d, "parquet": load_table, "csv": load_table}
"""`data.source` -> loader; the spec's validation already limits the source to these names."""


def load_splits(spec: DataSpec) -> Splits:
    return LOADERS[spec.source](spec)


def data_fingerprint(spec: DataSpec) -> str:
    """What identifies the rows a spec reads, without reading them: the spec's data fields,
    plus for a table the path, size and modification time of each of its files (the transfer
    set's too), and for MNIST-1D the version of the package that generates it. Caches and
    cards are keyed by it.

    The trade-off against hashing every row: no pass over data that may not fit in one
    process, but a file rewritten with its size and modification time unchanged (a tool that
    restores mtimes) keeps its fingerprint, so a cache of the old rows would be reused; and a
    file copied or touched without a change gets a new one, so the cache is rebuilt once."""
    h = hashlib.sha256(spec.model_dump_json().encode())
    if isinstance(spec, TableData):
        locations = [spec.path] + ([spec.transfer.path] if spec.transfer else [])
        for location in locations:
            h.update(repr(file_listing(location)).encode())
    else:
        h.update(version("mnist1d").encode())
    return h.hexdigest()[:16]
