"""Teacher inference with Ray Data into the top-k cache that token-level distillation reads.

`cache/<teacher_fp>-<data_fp>-k<k>-t<T>/` holds one row per packed block: `input_ids` as read,
then the teacher's `topk_ids` and `topk_logprobs` at every position (lm.topk), written by an
autoscaling actor pool, and `manifest.json` written last. As for the classifier cache
(distillery.cache), a directory without a manifest is an interrupted write and is rebuilt, and
a committed one is reused. k and T are in the key because a top-k cache cannot be re-tempered
or widened: the full-vocabulary normalizer is gone.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch

from distillery.cache import committed_cache, read_cache
from distillery.config.training import InferenceSpec
from distillery.data.splits import fixed_list_to_numpy
from distillery.lm.artifacts import load_lm
from distillery.lm.topk import teacher_topk, topk_bytes_per_token, topk_table
from distillery.runtime import actor_pool, inference_device
from distillery.storage import Store
from distillery.store_layout import MANIFEST, cache_dir

INPUT_IDS_BYTES = np.dtype(np.int32).itemsize
"""Bytes per token of the `input_ids` column (int32, as lm.text_data packs it)."""


class TopkPredictor:
    """Ray Data callable class: loads the teacher once per actor, then appends its top-k
    next-token distribution to each batch of packed blocks."""

    def __init__(self, store_root: str, teacher_parts: tuple[str, ...], k: int,
                 temperature: float, metadata: dict):
        self.device = inference_device()
        self.model = load_lm(Store(store_root), teacher_parts)[0].to(self.device)
        self.k, self.temperature = k, temperature
        self.metadata = {key.encode(): value.encode() for key, value in metadata.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        blocks = torch.from_numpy(fixed_list_to_numpy(batch["input_ids"]).astype(np.int64))
        with torch.inference_mode():
            # (B, L, V): position t predicts t + 1
            logits = self.model(blocks[:, :-1].to(self.device)).logits
            ids, logprobs = teacher_topk(logits, self.k, self.temperature)
        topk = topk_table(ids.cpu(), logprobs.cpu())
        for name in topk.column_names:
            batch = batch.append_column(name, topk[name])
        return batch.replace_schema_metadata(self.metadata)


def topk_cache_key(teacher_fp: str, data_fp: str, k: int, temperature: float) -> str:
    return f"{teacher_fp}-{data_fp}-k{k}-t{float(temperature)!r}"


def build_topk_cache(store: Store, blocks: ray.data.Dataset, *, teacher_parts: tuple[str, ...],
                     teacher_fp: str, data_fp: str, k: int, temperature: float,
                     inference: InferenceSpec, spec_hash: str) -> dict:
    """Write (or reuse) the top-k cache of `blocks` (rows of `input_ids`, block_size + 1
    tokens each); returns the manifest (its `key` names the cache directory).

    Sizes per token position (tokens = rows * block_size): bytes_per_token_uncompressed is
    topk_bytes_per_token(k) + 4 for input_ids; parquet_bytes_per_token is the written files'
    bytes over tokens.
    """
    key = topk_cache_key(teacher_fp, data_fp, k, temperature)
    manifest = committed_cache(store, key)
    if manifest is not None:
        print(f"teacher-infer: reusing top-k cache {store.uri(*cache_dir(key))} "
              f"({manifest['rows']} blocks; same teacher {teacher_fp}, data {data_fp}, k {k} "
              f"and T {temperature:g})", flush=True)
        return manifest
    started = time.perf_counter()
    metadata = {"teacher_fingerprint": teacher_fp, "data_fingerprint": data_fp,
                "spec_hash": spec_hash, "k": str(k), "temperature": f"{temperature:g}"}
    blocks.map_batches(
        TopkPredictor,
        fn_constructor_kwargs={"store_root": store.root, "teacher_parts": teacher_parts,
                               "k": k, "temperature": temperature, "metadata": metadata},
        batch_size=inference.batch_size,
        batch_format="pyarrow",
        **actor_pool(inference),
    ).write_parquet(store.fs_path(*cache_dir(key)), filesystem=store.fs)
    rows, block_size, parquet_bytes = _written(store, key)
    if rows == 0:
        raise ValueError(f"teacher-infer: no blocks to cache in data {data_fp}: its split holds "
                         "less text than one block of data.block_size + 1 tokens; add text or "
                         "lower data.block_size")
    tokens = rows * block_size
    manifest = {
        **metadata,
        "k": k,
        "temperature": temperature,
        "key": key,
        "rows": rows,
        "block_size": block_size,
        "tokens": tokens,
        "columns": ["input_ids", "topk_ids", "topk_logprobs"],
        "bytes_per_token_uncompressed": topk_bytes_per_token(k) + INPUT_IDS_BYTES,
        "parquet_bytes": parquet_bytes,
        "parquet_bytes_per_token": round(parquet_bytes / tokens, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    store.write_json(manifest, *cache_dir(key), MANIFEST)
    print(f"teacher-infer: wrote {rows} blocks ({tokens} tokens, top-{k} at T {temperature:g}) "
          f"to {store.uri(*cache_dir(key))} in {manifest['seconds']}s, "
          f"{manifest['parquet_bytes_per_token']} B/token in Parquet "
          f"({manifest['bytes_per_token_uncompressed']} uncompressed)", flush=True)
    return manifest


def _written(store: Store, key: str) -> tuple[int, int, int]:
    """(rows, block_size, bytes) of the Parquet files in cache/<key>, from their footers;
    (0, 0, 0) when nothing was written."""
    selector = pafs.FileSelector(store.fs_path(*cache_dir(key)), allow_not_found=True)
    files = [f for f in store.fs.get_file_info(selector) if f.path.endswith(".parquet")]
    rows = sum(pq.read_metadata(f.path, filesystem=store.fs).num_rows for f in files)
    if rows == 0:
        return 0, 0, 0
    schema = pq.read_schema(files[0].path, filesystem=store.fs)
    return rows, schema.field("topk_ids").type.list_size, sum(f.size for f in files)


def read_topk_cache(store: Store, key: str) -> ray.data.Dataset:
    """The cache's rows: `input_ids`, `topk_ids`, `topk_logprobs` (lm.topk.topk_tensors)."""
    return read_cache(store, key)
