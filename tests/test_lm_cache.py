"""The top-k cache on the real local Ray: contents equal the teacher's top-k, manifest, reuse,
interrupted writes."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distillery.config.training import InferenceSpec
from distillery.lm.artifacts import lm_card, save_lm
from distillery.lm.bpe import train_byte_level_bpe
from distillery.lm.cache import build_topk_cache, read_topk_cache, topk_cache_key
from distillery.lm.topk import teacher_topk, topk_tensors
from distillery.storage import Store
from distillery.store_layout import MANIFEST

TEACHER = ("teachers", "tiny-lm", "tfp")
BLOCKS, BLOCK_SIZE, K, T = 300, 16, 8, 2.0
INFERENCE = InferenceSpec(batch_size=64, concurrency=(1, 1), cpus_per_actor=0.5)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """A store with a tiny random GPT-2 teacher (300-token BPE), 300 packed train blocks and
    their top-k cache, built once on the session's local Ray; and the cache's manifest."""
    from distillery.runtime import ensure_ray

    logging.getLogger("transformers").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("lm-store")
    texts = [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    tokenizer = train_byte_level_bpe(texts, 300)
    torch.manual_seed(0)
    # initializer_range well above GPT-2's 0.02: peaked logits, so no top-k has near-ties
    # whose order could depend on the thread count
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64,
                                       vocab_size=len(tokenizer), bos_token_id=0,
                                       eos_token_id=0, initializer_range=0.5))
    save_lm(Store(str(root)), TEACHER, model, tokenizer, lm_card(model))
    blocks = np.random.default_rng(0).integers(0, 300, (BLOCKS, BLOCK_SIZE + 1), dtype=np.int32)
    data = root / "lm-data" / "dfp" / "train"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(
        pa.array(blocks.reshape(-1)), BLOCK_SIZE + 1)}), data / "blocks.parquet")
    ensure_ray()
    return root, build(Store(str(root)))


@pytest.fixture
def store(built, tmp_path) -> Store:
    """A private copy of the module's store, its cache built."""
    shutil.copytree(built[0], tmp_path / "store")
    return Store(str(tmp_path / "store"))


def build(store: Store, data_fp: str = "dfp") -> dict:
    import ray

    blocks = ray.data.read_parquet(store.fs_path("lm-data", data_fp, "train"),
                                   filesystem=store.fs, file_extensions=["parquet"])
    return build_topk_cache(store, blocks, teacher_parts=TEACHER, teacher_fp="tfp",
                            data_fp=data_fp, k=K, temperature=T, inference=INFERENCE,
                            spec_hash="spec")


def cache_files(store: Store, key: str) -> list[Path]:
    return sorted(Path(store.fs_path("cache", key)).glob("*.parquet"))


def test_cache_key_names_teacher_data_k_and_temperature():
    assert topk_cache_key("t", "d", 32, 2.0) == "t-d-k32-t2.0"
    assert topk_cache_key("t", "d", 8, 0.5) == "t-d-k8-t0.5"


def test_cache_holds_the_teachers_topk_of_every_block(built, store, local_ray):
    from distillery.lm.artifacts import load_lm

    manifest = built[1]
    table = pa.concat_tables(read_topk_cache(store, manifest["key"]).iter_batches(
        batch_size=None, batch_format="pyarrow"))
    assert table.schema.field("input_ids").type == pa.list_(pa.int32(), BLOCK_SIZE + 1)
    assert table.schema.field("topk_ids").type == pa.list_(pa.list_(pa.int32(), K), BLOCK_SIZE)
    assert table.schema.field("topk_logprobs").type == pa.list_(pa.list_(pa.float16(), K),
                                                                BLOCK_SIZE)
    # rows come back in any order: compare them sorted by their tokens
    blocks = table["input_ids"].combine_chunks().flatten().to_numpy().reshape(BLOCKS, -1)
    order = np.lexsort(blocks.T[::-1])
    ids, logprobs = topk_tensors(table)
    model, _, _ = load_lm(store, TEACHER)
    inputs = torch.from_numpy(blocks[order].astype(np.int64))
    with torch.inference_mode():
        want_ids, want_logprobs = teacher_topk(model(inputs[:, :-1]).logits, K, T)
    assert torch.equal(ids[order], want_ids.long())
    torch.testing.assert_close(logprobs[order], want_logprobs.float(), rtol=0, atol=2e-3)

    files = cache_files(store, manifest["key"])
    meta = pq.read_metadata(files[0]).metadata
    assert {k: meta[k.encode()].decode() for k in ("teacher_fingerprint", "data_fingerprint",
                                                   "spec_hash", "k", "temperature")} == {
        "teacher_fingerprint": "tfp", "data_fingerprint": "dfp", "spec_hash": "spec",
        "k": "8", "temperature": "2"}
    assert manifest == store.read_json("cache", "tfp-dfp-k8-t2.0", MANIFEST)
    assert manifest["key"] == "tfp-dfp-k8-t2.0"
    assert (manifest["rows"], manifest["block_size"], manifest["tokens"]) == (300, 16, 4800)
    assert (manifest["k"], manifest["temperature"]) == (8, 2.0)
    assert manifest["bytes_per_token_uncompressed"] == 8 * (4 + 2) + 4
    assert manifest["parquet_bytes"] == sum(f.stat().st_size for f in files)
    assert manifest["parquet_bytes_per_token"] == round(manifest["parquet_bytes"] / 4800, 2)
    assert manifest["seconds"] > 0


def test_same_teacher_data_k_and_temperature_reuse_the_cache(built, store, local_ray, capsys):
    first = built[1]
    before = {p.name: p.stat().st_mtime_ns for p in Path(store.fs_path("cache", first["key"]))
              .iterdir()}
    capsys.readouterr()
    assert build(store) == first
    assert "reusing top-k cache" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in Path(store.fs_path("cache", first["key"]))
            .iterdir()} == before


def test_an_uncommitted_topk_cache_is_rebuilt_not_read(store, local_ray, capsys):
    key = "tfp-dfp-k8-t2.0"
    # a crash mid-write: the manifest never made it, a torn file did
    Path(store.fs_path("cache", key, MANIFEST)).unlink()
    Path(store.fs_path("cache", key, "partial.parquet")).write_bytes(b"PAR1 torn")
    capsys.readouterr()
    rebuilt = build(store)
    assert "wrote 300 blocks (4800 tokens, top-8 at T 2)" in capsys.readouterr().out
    assert not Path(store.fs_path("cache", key, "partial.parquet")).exists()
    assert rebuilt["rows"] == 300 and store.exists("cache", key, MANIFEST)


def test_data_without_a_block_is_an_error_not_an_empty_cache(store, local_ray):
    empty = Path(store.fs_path("lm-data", "empty", "train"))
    empty.mkdir(parents=True)
    pq.write_table(pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(
        pa.array([], pa.int32()), BLOCK_SIZE + 1)}), empty / "blocks.parquet")
    with pytest.raises(ValueError, match="no blocks to cache in data empty"):
        build(store, "empty")
    assert not store.exists("cache", "tfp-empty-k8-t2.0", MANIFEST)
