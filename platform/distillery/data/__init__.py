"""Dataset sources named in the spec's `data.source`: each opened as one `Source` (rows as Ray
Datasets, and an in-memory `Splits` sample).

`distillery.data.sources.open_source` opens a spec's data. It is not imported here: importing
this package (as every Ray worker does for the `splits` helpers) would then import every
source's libraries too.
"""

from distillery.data.splits import Splits

__all__ = ["Splits"]
