"""BENCHMARKS.md is assembled from sections, one per bench, each rewritten by its own run; the
results files go under bench/results/."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results"
HEADER = ("# Benchmarks\n\nEach section is rewritten by the bench named in it; numbers come "
          "from one run on the machine it names.\n")


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}


def results_path(name: str, output: str | Path | None, smoke: bool) -> Path:
    """`output`, else bench/results/<name>.json; a --smoke run's is under bench/results/smoke/
    (ignored by git), so that a smoke never replaces a measured result."""
    if output:
        return Path(output)
    return (RESULTS / "smoke" if smoke else RESULTS) / f"{name}.json"


def serving_title(title: str, script: str, proxy_dataplane: bool) -> str:
    """The heading of a serving bench's section: the run on Serve's proxy has its own."""
    if not proxy_dataplane:
        return f"## {title} (`bench/{script}.py`)\n\n"
    return f"## {title}, Serve's proxy (`bench/{script}.py --proxy-dataplane`)\n\n"


def refuse_unnamed_experiment(parser, args, flags: dict[str, str]) -> None:
    """Exit with a usage error when any of `flags` ({flag: attribute}) is away from its default
    outside --smoke and no --output is named: the results of record are the bench's own runs,
    and a variant must not replace them."""
    defaults = parser.parse_args([])
    varied = [flag for flag, attr in flags.items()
              if getattr(args, attr) != getattr(defaults, attr)]
    if varied and not args.smoke and args.output is None:
        parser.error(f"{', '.join(varied)}: an experiment; give --output for its results")


def update_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between this bench's markers, atomically."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = BENCHMARKS.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(BENCHMARKS)
