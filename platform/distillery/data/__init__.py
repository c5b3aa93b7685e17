"""Dataset sources named in the spec's `data.source`, loaded into one `Splits` shape."""

from distillery.data.splits import Splits, load_splits

__all__ = ["Splits", "load_splits"]
