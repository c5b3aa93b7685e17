"""Teacher inference with Ray Data into the Parquet logit cache.

`cache/<teacher_fp>-<data_fp>/` holds the rows the student trains on (`id`, `x`, `label`,
`logits`, and `features.<layer>` for feature distillation, flattened), written by an
autoscaling actor pool, and `manifest.json` written last: a directory without a manifest is an
interrupted write and is rebuilt, never read. The same teacher, data fingerprints and layers
reuse the cache; a cache with layers has its own key, so a logits-only one is never widened.
"""

from __future__ import annotations

import hashlib
import time

import pyarrow as pa
import ray
import torch

from distillery.config import InferenceSpec
from distillery.data.splits import fixed_list_to_numpy
from distillery.models import load_model
from distillery.runtime import actor_pool, inference_device
from distillery.storage import Store
from distillery.store_layout import MANIFEST, cache_dir
from distillery.strategies.feature import Capture, cache_column


class TeacherPredictor:
    """Ray Data callable class: loads the teacher once per actor, then maps batches."""

    def __init__(self, store_root: str, teacher_parts: tuple[str, ...], metadata: dict,
                 layers: list[str]):
        self.device = inference_device()
        self.model = load_model(Store(store_root), teacher_parts)[0].to(self.device)
        self.layers = layers
        self.capture = Capture(self.model, layers)
        self.metadata = {k.encode(): v.encode() for k, v in metadata.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = torch.tensor(fixed_list_to_numpy(batch["x"]), device=self.device)
        with torch.inference_mode():
            out = batch.append_column("logits", _fixed_list(self.model(x)))
            for layer in self.layers:
                out = out.append_column(cache_column(layer),
                                        _fixed_list(self.capture.outputs[layer]))
        return out.replace_schema_metadata(self.metadata)


def _fixed_list(t: torch.Tensor) -> pa.FixedSizeListArray:
    """(B, ...) tensor -> one fixed-size float32 list per row, flattened."""
    rows = t.float().reshape(len(t), -1).cpu().numpy()
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


def cache_key(teacher_fp: str, data_fp: str, layers: list[str] = ()) -> str:
    if not layers:
        return f"{teacher_fp}-{data_fp}"
    digest = hashlib.sha256("\n".join(sorted(layers)).encode()).hexdigest()[:8]
    return f"{teacher_fp}-{data_fp}-f{digest}"


def build_cache(store: Store, rows: ray.data.Dataset, *, num_rows: int, labelled_rows: int,
                teacher_parts: tuple[str, ...], teacher_fp: str, data_fp: str,
                spec_hash: str, inference: InferenceSpec, layers: list[str] = ()) -> dict:
    """Write (or reuse) the teacher cache for `rows` (`num_rows` of them, `labelled_rows`
    with a label), with the outputs of `layers` too; returns the manifest (its `key` names
    the cache directory)."""
    layers = sorted(layers)
    key = cache_key(teacher_fp, data_fp, layers)
    manifest = committed_cache(store, key)
    if manifest is not None:
        print(f"teacher-infer: reusing cache {store.uri(*cache_dir(key))} "
              f"({manifest['rows']} rows; same teacher {teacher_fp} and data {data_fp})",
              flush=True)
        return manifest
    started = time.perf_counter()
    metadata = {"teacher_fingerprint": teacher_fp, "data_fingerprint": data_fp,
                "spec_hash": spec_hash}
    ds = rows.map_batches(
        TeacherPredictor,
        fn_constructor_kwargs={"store_root": store.root, "teacher_parts": teacher_parts,
                               "metadata": metadata, "layers": layers},
        batch_size=inference.batch_size,
        batch_format="pyarrow",
        **actor_pool(inference),
    )
    ds.write_parquet(store.fs_path(*cache_dir(key)), filesystem=store.fs)
    manifest = {
        **metadata,
        "key": key,
        "rows": num_rows,
        "labelled_rows": labelled_rows,
        "columns": ["id", "x", "label", "logits", *map(cache_column, layers)],
        "seconds": round(time.perf_counter() - started, 2),
    }
    store.write_json(manifest, *cache_dir(key), MANIFEST)
    print(f"teacher-infer: wrote {num_rows} rows to {store.uri(*cache_dir(key))} "
          f"in {manifest['seconds']}s", flush=True)
    return manifest


def committed_cache(store: Store, key: str) -> dict | None:
    """The manifest of cache/<key>, with its key, when that cache was committed. Otherwise
    None, and whatever an interrupted earlier write left there is removed, so the caller
    writes the cache from nothing and commits it by writing MANIFEST last."""
    if store.exists(*cache_dir(key), MANIFEST):
        return {**store.read_json(*cache_dir(key), MANIFEST), "key": key}
    store.remove_dir(*cache_dir(key))
    return None


def read_cache(store: Store, key: str) -> ray.data.Dataset:
    return ray.data.read_parquet(store.fs_path(*cache_dir(key)), filesystem=store.fs,
                                 file_extensions=["parquet"])
