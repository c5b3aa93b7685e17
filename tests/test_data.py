import os

import numpy as np
import pyarrow as pa
import pytest

from distillery.config import Mnist1dData, Mnist1dTransfer, TableData
from distillery.data.mnist1d import load_mnist1d
from distillery.data.sources import data_fingerprint
from distillery.data.splits import fixed_list_to_numpy, to_table
from distillery.data.tables import (
    assign_splits,
    column_keys,
    content_keys,
    repeat_rows,
    sample_draws,
)


@pytest.fixture(scope="module")
def canonical():
    return load_mnist1d(Mnist1dData(source="mnist1d", transfer=Mnist1dTransfer(num_samples=500)))


def test_mnist1d_is_the_canonical_split(canonical):
    s = canonical
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (3600, 400, 1000)
    assert s.x_train.shape[1] == 40 and s.num_classes == 10
    assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int64
    assert s.x_transfer.shape == (500, 40)


def same_rows(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
        "x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_transfer"))


def test_mnist1d_is_deterministic_and_fingerprinted_by_its_spec(canonical):
    spec = Mnist1dData(source="mnist1d", transfer=Mnist1dTransfer(num_samples=500))
    assert same_rows(load_mnist1d(spec), canonical)
    other = Mnist1dData(source="mnist1d", transfer=Mnist1dTransfer(num_samples=500, seed=8))
    assert data_fingerprint(spec) == data_fingerprint(spec.model_copy())
    assert data_fingerprint(other) != data_fingerprint(spec)
    assert not np.array_equal(load_mnist1d(other).x_transfer, canonical.x_transfer)


def test_distill_rows_mark_transfer_rows_unlabeled(canonical):
    rows = canonical.distill_rows()
    assert rows.num_rows == canonical.num_distill_rows == 3600 + 500
    assert rows["label"].null_count == 500
    rows = rows.sort_by("id")
    assert rows["id"].to_pylist() == list(range(4100))
    assert rows["label"].slice(3600).null_count == 500
    np.testing.assert_array_equal(fixed_list_to_numpy(rows["x"].slice(3600)),
                                  canonical.x_transfer)


def test_distill_rows_mix_labelled_and_transfer_rows(canonical):
    first_block = canonical.distill_rows().slice(0, 1000)
    # 3600 of 4100 rows are labelled; an unshuffled table would start with 1000 labelled rows
    assert 0 < first_block["label"].null_count < 1000


def test_fixed_list_to_numpy_honours_slices():
    table = to_table(np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(4))
    np.testing.assert_array_equal(fixed_list_to_numpy(table["x"].slice(2, 1)), [[6, 7, 8]])


def test_a_table_fingerprint_follows_its_files_listing_without_reading_them(tmp_path):
    folder = tmp_path / "rows"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"not parquet: the listing is all that is read")
    spec = TableData(source="parquet", path=str(folder), features=["a"], label="y")
    first = data_fingerprint(spec)
    assert data_fingerprint(spec) == first  # nothing changed
    (folder / "part-1.parquet").write_bytes(b"x")
    added = data_fingerprint(spec)
    assert added != first  # a file more
    os.utime(folder / "part-1.parquet", ns=(0, 0))
    assert data_fingerprint(spec) != added  # rewritten in place: a new modification time
    touched = data_fingerprint(spec)
    (folder / "part-1.parquet").write_bytes(b"xy")
    os.utime(folder / "part-1.parquet", ns=(0, 0))
    assert data_fingerprint(spec) != touched  # same time, new size
    assert data_fingerprint(spec.model_copy(update={"seed": 1})) != data_fingerprint(spec)


def test_split_shares_are_the_fractions_on_average_and_each_key_keeps_its_split():
    keys = np.arange(100_000, dtype=np.uint64)
    split = assign_splits(keys, 0, 0.2, 0.25)
    shares = np.bincount(split, minlength=3) / len(keys)
    np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.01)
    order = np.random.default_rng(0).permutation(len(keys))
    np.testing.assert_array_equal(assign_splits(keys[order], 0, 0.2, 0.25), split[order])
    assert (assign_splits(keys, 1, 0.2, 0.25) != split).mean() > 0.3  # the seed reshuffles


def test_identical_rows_share_a_split():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5]] * 200, dtype=np.float32)
    labels = pa.chunked_array([["a", "a", "a"] * 200])
    keys = content_keys(x, column_keys(labels))
    assert len(set(keys[0::3].tolist())) == 1 and keys[0] != keys[2]
    assert content_keys(x, column_keys(pa.chunked_array([["b", "a", "a"] * 200])))[0] != keys[0]


def test_a_sample_is_fixed_by_the_keys_and_its_rate():
    keys = np.arange(100_000, dtype=np.uint64)
    draws = sample_draws(keys, 0)
    assert abs((draws < 0.1).mean() - 0.1) < 0.01
    order = np.random.default_rng(1).permutation(len(keys))
    np.testing.assert_array_equal(sample_draws(keys[order], 0), draws[order])
    # independent of the split's draw: a tenth of each split, not the bottom of one
    split = assign_splits(keys, 0, 0.2, 0.25)
    for k in range(3):
        assert abs((draws[split == k] < 0.1).mean() - 0.1) < 0.02


def test_string_keys_hash_each_distinct_value_once_and_integers_stay():
    np.testing.assert_array_equal(column_keys(pa.array([3, 7], pa.int32())), [3, 7])
    keys = column_keys(pa.chunked_array([["a", "b"], ["a"]]))
    assert keys[0] == keys[2] != keys[1]


def test_a_block_repeats_to_the_baseline_budget_on_average_each_row_whole_times_or_once_more():
    block = to_table(np.zeros((1000, 2), np.float32), np.zeros(1000, np.int64))
    out = repeat_rows(block, 2.5, seed=0)
    counts = np.bincount(out["id"].to_numpy(), minlength=1000)
    assert set(counts.tolist()) == {2, 3} and abs(len(out) - 2500) < 60
    assert repeat_rows(block, 2.0, seed=0).num_rows == 2000
