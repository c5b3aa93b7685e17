import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from distillery.config import Mnist1dData, Mnist1dTransfer, TableData, TableTransfer
from distillery.data.sources import data_fingerprint, load_splits
from distillery.data.splits import fixed_list_to_numpy, to_table
from distillery.data.tables import assign_splits, content_keys


@pytest.fixture(scope="module")
def canonical():
    return load_splits(Mnist1dData(source="mnist1d", transfer=Mnist1dTransfer(num_samples=500)))


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
    assert same_rows(load_splits(spec), canonical)
    other = Mnist1dData(source="mnist1d", transfer=Mnist1dTransfer(num_samples=500, seed=8))
    assert data_fingerprint(spec) == data_fingerprint(spec.model_copy())
    assert data_fingerprint(other) != data_fingerprint(spec)
    assert not np.array_equal(load_splits(other).x_transfer, canonical.x_transfer)


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


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_table_source(tmp_path, fmt):
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=100), "b": rng.normal(size=100),
                      "y": np.array(["cat", "dog"] * 50)})
    path = tmp_path / f"rows.{fmt}"
    (pq.write_table if fmt == "parquet" else pcsv.write_csv)(table, path)
    spec = TableData(source=fmt, path=str(path), features=["a", "b"], label="y",
                     test_fraction=0.2, val_fraction=0.25, transfer=TableTransfer(path=str(path)))
    s = load_splits(spec)
    sizes = (len(s.x_train), len(s.x_val), len(s.x_test))
    assert sum(sizes) == 100 and min(sizes) > 0  # shares by each row's key: near 60/20/20
    assert s.num_classes == 2 and s.x_transfer.shape == (100, 2)
    assert same_rows(load_splits(spec), s)


def test_table_source_rejects_empty_labels(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, None, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    with pytest.raises(ValueError, match="data.label: column 'y' has 1 empty values"):
        load_splits(spec)


def test_table_source_names_a_missing_column(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a", "zz"], label="y")
    with pytest.raises(ValueError, match=r"data.features: columns \['zz'\] not in"):
        load_splits(spec)


def invalid_table(tmp_path) -> TableData:
    """Ten rows, two of them invalid: row 3 has a NaN in `b`, row 7 an infinity in `a`; and a
    transfer file of the same rows."""
    a, b = np.arange(10.0), np.arange(10.0)
    b[3], a[7] = np.nan, np.inf
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": a, "b": b, "y": np.arange(10) % 2}), path)
    return TableData(source="parquet", path=str(path), features=["a", "b"], label="y",
                     test_fraction=0.25, val_fraction=0.25, transfer=TableTransfer(path=str(path)))


def test_a_nan_or_infinite_feature_is_an_error_naming_its_column_and_row(tmp_path):
    spec = invalid_table(tmp_path)
    with pytest.raises(ValueError) as err:
        load_splits(spec)
    assert str(err.value) == (f"{spec.path}: column 'b' is nan at row 3 (2 rows have a NaN or "
                              "infinite feature; data.on_invalid=drop leaves them out)")


def test_on_invalid_drop_leaves_out_and_counts_the_rows(tmp_path, capsys):
    spec = invalid_table(tmp_path).model_copy(update={"on_invalid": "drop"})
    s = load_splits(spec)
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 8 and len(s.x_transfer) == 8
    kept = np.concatenate([s.x_train, s.x_val, s.x_test, s.x_transfer])
    assert np.isfinite(kept).all() and 3.0 not in kept[:, 1] and 7.0 not in kept[:, 0]
    assert capsys.readouterr().out.count(
        f"data: dropped 2 of 10 rows of {spec.path} with a NaN or infinite feature") == 2


def test_a_null_feature_is_invalid_like_a_nan(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": pa.array([1, None, 3], pa.int32()), "y": [0, 1, 0]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    with pytest.raises(ValueError, match="column 'a' is nan at row 1"):
        load_splits(spec)


def test_non_numeric_feature_columns_are_named(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "s": ["x", "y"], "t": [b"x", b"y"],
                             "y": [0, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a", "s", "t"], label="y")
    with pytest.raises(ValueError) as err:
        load_splits(spec)
    assert str(err.value) == ("data.features: columns ['s', 't'] are not numeric "
                              "({'s': 'string', 't': 'binary'})")


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


def split_of(s) -> dict[str, set]:
    """Feature `a` (a row's id) of each split's rows."""
    return {name: set(getattr(s, f"x_{name}")[:, 0].tolist()) for name in ("train", "val", "test")}


def write_rows(folder, ids, files: int) -> None:
    folder.mkdir()
    for i, part in enumerate(np.array_split(ids, files)):
        pq.write_table(pa.table({"id": part, "a": part.astype(float), "y": part % 2}),
                       folder / f"part-{i}.parquet")


def test_a_key_column_gives_each_row_the_same_split_whatever_the_file_layout(tmp_path):
    ids = np.arange(500)
    write_rows(tmp_path / "one", ids, 1)
    write_rows(tmp_path / "three", np.random.default_rng(0).permutation(ids), 3)
    spec = TableData(source="parquet", path=str(tmp_path / "one"), features=["a"], label="y",
                     key="id")
    one = split_of(load_splits(spec))
    assert split_of(load_splits(spec.model_copy(update={"path": str(tmp_path / "three")}))) == one
    assert all(one.values())


def test_without_a_key_a_row_is_keyed_by_its_content_whatever_the_layout(tmp_path):
    ids = np.arange(500)
    write_rows(tmp_path / "one", ids, 1)
    write_rows(tmp_path / "three", np.random.default_rng(0).permutation(ids), 3)
    spec = TableData(source="parquet", path=str(tmp_path / "one"), features=["a"], label="y")
    one = split_of(load_splits(spec))
    assert split_of(load_splits(spec.model_copy(update={"path": str(tmp_path / "three")}))) == one


def test_identical_rows_share_a_split():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5]] * 200, dtype=np.float32)
    labels = pa.chunked_array([["a", "a", "a"] * 200])
    keys = content_keys(x, labels)
    assert len(set(keys[0::3].tolist())) == 1 and keys[0] != keys[2]
    assert content_keys(x, pa.chunked_array([["b", "a", "a"] * 200]))[0] != keys[0]


def test_without_a_key_a_new_file_moves_no_row_of_the_others(tmp_path):
    folder = tmp_path / "rows"
    write_rows(folder, np.arange(300), 1)
    spec = TableData(source="parquet", path=str(folder), features=["a"], label="y")
    before = split_of(load_splits(spec))
    pq.write_table(pa.table({"id": np.arange(300, 400), "a": np.arange(300.0, 400.0),
                             "y": np.arange(100) % 2}), folder / "part-9.parquet")
    after = split_of(load_splits(spec))
    assert {k: v & set(range(300)) for k, v in after.items()} == before


def test_a_missing_key_column_is_named(tmp_path):
    write_rows(tmp_path / "rows", np.arange(10), 1)
    spec = TableData(source="parquet", path=str(tmp_path / "rows"), features=["a"], label="y",
                     key="row_id")
    with pytest.raises(ValueError, match=r"data.key: column 'row_id' not in \['id', 'a', 'y'\]"):
        load_splits(spec)


def test_a_table_too_small_for_a_split_says_so(tmp_path):
    write_rows(tmp_path / "rows", np.arange(3), 1)
    spec = TableData(source="parquet", path=str(tmp_path / "rows"), features=["a"], label="y")
    with pytest.raises(ValueError, match="the split leaves no (val|test|train) rows of 3"):
        load_splits(spec)


def test_label_names_are_kept_found_sorted_or_in_the_order_the_spec_gives(tmp_path):
    path = tmp_path / "rows.parquet"
    labels = np.array(["dog", "cat", "bird"] * 20)
    pq.write_table(pa.table({"a": np.arange(60.0), "y": labels}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    found = load_splits(spec)
    assert found.class_names == ("bird", "cat", "dog") and found.num_classes == 3
    rows = dict(zip(found.x_train[:, 0].tolist(), found.y_train.tolist(), strict=True))
    assert all(found.class_names[c] == labels[int(a)] for a, c in rows.items())
    given = load_splits(spec.model_copy(update={"classes": ["dog", "cat", "bird", "fish"]}))
    assert given.num_classes == 4  # a class with no rows still has its index
    rows = dict(zip(given.x_train[:, 0].tolist(), given.y_train.tolist(), strict=True))
    assert all(given.class_names[c] == labels[int(a)] for a, c in rows.items())


def test_a_label_outside_the_given_classes_is_named(tmp_path):
    path = tmp_path / "rows.csv"
    pcsv.write_csv(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, 1, 7]}), path)
    spec = TableData(source="csv", path=str(path), features=["a"], label="y", classes=["0", "1"])
    with pytest.raises(ValueError) as err:
        load_splits(spec)
    assert str(err.value) == ("data.label: 1 rows have a label not in data.classes, the first "
                              "'7' (classes: ['0', '1'])")
