"""A table read by Ray Data: splits by row key, classes, invalid rows and column errors found
in a streaming pass, and a bounded sample the driver holds, kept in the store."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import ray

from distillery.config import TableData, TableTransfer
from distillery.data.sources import data_fingerprint, open_source
from distillery.data.splits import fixed_list_to_numpy
from distillery.storage import Store
from distillery.store_layout import MANIFEST, table_data_dir

pytestmark = pytest.mark.usefixtures("local_ray")


def load(spec: TableData, tmp_path):
    return open_source(spec, Store(str(tmp_path / "store"))).sample()


def collect(ds) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def same_rows(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
        "x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_table_source(tmp_path, fmt):
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=100), "b": rng.normal(size=100),
                      "y": np.array(["cat", "dog"] * 50)})
    path = tmp_path / f"rows.{fmt}"
    (pq.write_table if fmt == "parquet" else pcsv.write_csv)(table, path)
    spec = TableData(source=fmt, path=str(path), features=["a", "b"], label="y",
                     test_fraction=0.2, val_fraction=0.25, transfer=TableTransfer(path=str(path)))
    store = Store(str(tmp_path / "store"))
    source = open_source(spec, store)
    s = source.sample()
    sizes = (len(s.x_train), len(s.x_val), len(s.x_test))
    assert sum(sizes) == 100 and min(sizes) > 0  # shares by each row's key: near 60/20/20
    assert sizes == tuple(source.count(k) for k in ("train", "val", "test"))
    assert s.num_classes == 2 and source.count("transfer") == 100
    # kept in the store by the data's fingerprint: a second open reads it back
    assert store.exists(*table_data_dir(data_fingerprint(spec)), MANIFEST)
    assert same_rows(open_source(spec, store).sample(), s)
    rows = collect(source.distill_rows(block_rows=16))
    assert rows.num_rows == source.count("train") + 100 and rows["label"].null_count == 100
    assert set(rows.column_names) == {"id", "x", "label"}


def test_a_large_split_is_sampled_the_same_every_time_and_streamed_whole(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": np.arange(2000.0), "y": np.arange(2000) % 3}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y",
                     sample_rows=100)
    source = open_source(spec, Store(str(tmp_path / "one")))
    s = source.sample()
    assert 70 < len(s.x_train) < 130 and 70 < len(s.x_test) < 130  # of ~1440 and ~400 rows
    assert same_rows(open_source(spec, Store(str(tmp_path / "two"))).sample(), s)
    train = collect(source.rows("train"))
    assert train.num_rows == source.count("train") > 1000
    assert set(s.x_train[:, 0]) <= set(fixed_list_to_numpy(train["x"])[:, 0])


def test_table_source_rejects_empty_labels(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, None, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    with pytest.raises(ValueError, match="data.label: column 'y' has 1 empty values"):
        load(spec, tmp_path)


def test_table_source_names_a_missing_column(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a", "zz"], label="y")
    with pytest.raises(ValueError, match=r"data.features: columns \['zz'\] not in"):
        load(spec, tmp_path)


def invalid_table(tmp_path, key: str | None = None) -> TableData:
    """Ten rows, two of them invalid: row 3 has a NaN in `b`, row 7 an infinity in `a`; and a
    transfer file of the same rows."""
    a, b = np.arange(10.0), np.arange(10.0)
    b[3], a[7] = np.nan, np.inf
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": a, "b": b, "y": np.arange(10) % 2,
                             "row": np.arange(100, 110)}), path)
    return TableData(source="parquet", path=str(path), features=["a", "b"], label="y",
                     key=key, test_fraction=0.25, val_fraction=0.25,
                     transfer=TableTransfer(path=str(path)))


def test_a_nan_or_infinite_feature_is_an_error_naming_its_column_and_row(tmp_path):
    spec = invalid_table(tmp_path, key="row")
    with pytest.raises(ValueError) as err:
        load(spec, tmp_path)
    assert re.fullmatch(r".*rows\.parquet: column 'b' is nan in the row with row 103 \(2 rows "
                        r"have a NaN or infinite feature; data.on_invalid=drop leaves them out\)",
                        str(err.value)), str(err.value)
    spec = invalid_table(tmp_path / "no-key")
    with pytest.raises(ValueError, match=r"rows\.parquet: column 'b' is nan in a row \(2 rows"):
        load(spec, tmp_path)


def test_on_invalid_drop_leaves_out_and_counts_the_rows(tmp_path, capsys):
    spec = invalid_table(tmp_path).model_copy(update={"on_invalid": "drop"})
    source = open_source(spec, Store(str(tmp_path / "store")))
    s = source.sample()
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 8 and source.count("transfer") == 8
    kept = np.concatenate([s.x_train, s.x_val, s.x_test])
    assert np.isfinite(kept).all() and 3.0 not in kept[:, 1] and 7.0 not in kept[:, 0]
    assert capsys.readouterr().out.count(
        f"data: dropped 2 of 10 rows of {spec.path} with a NaN or infinite feature") == 2
    rows = collect(source.distill_rows(block_rows=4))
    assert rows.num_rows == source.count("train") + 8
    assert np.isfinite(fixed_list_to_numpy(rows["x"])).all()


def test_a_null_feature_is_invalid_like_a_nan(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": pa.array([1, None, 3], pa.int32()), "y": [0, 1, 0]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    with pytest.raises(ValueError, match="column 'a' is nan in a row"):
        load(spec, tmp_path)


def test_non_numeric_feature_columns_are_named(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "s": ["x", "y"], "t": [b"x", b"y"],
                             "y": [0, 1]}), path)
    spec = TableData(source="parquet", path=str(path), features=["a", "s", "t"], label="y")
    with pytest.raises(ValueError) as err:
        load(spec, tmp_path)
    assert str(err.value) == ("data.features: columns ['s', 't'] are not numeric "
                              "({'s': 'string', 't': 'binary'})")


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
    one = split_of(load(spec, tmp_path))
    three = spec.model_copy(update={"path": str(tmp_path / "three")})
    assert split_of(load(three, tmp_path)) == one
    assert all(one.values())


def test_without_a_key_a_row_is_keyed_by_its_content_whatever_the_layout(tmp_path):
    ids = np.arange(500)
    write_rows(tmp_path / "one", ids, 1)
    write_rows(tmp_path / "three", np.random.default_rng(0).permutation(ids), 3)
    spec = TableData(source="parquet", path=str(tmp_path / "one"), features=["a"], label="y")
    one = split_of(load(spec, tmp_path))
    three = spec.model_copy(update={"path": str(tmp_path / "three")})
    assert split_of(load(three, tmp_path)) == one


def test_without_a_key_a_new_file_moves_no_row_of_the_others(tmp_path):
    folder = tmp_path / "rows"
    write_rows(folder, np.arange(300), 1)
    spec = TableData(source="parquet", path=str(folder), features=["a"], label="y")
    before = split_of(load(spec, tmp_path))
    pq.write_table(pa.table({"id": np.arange(300, 400), "a": np.arange(300.0, 400.0),
                             "y": np.arange(100) % 2}), folder / "part-9.parquet")
    after = split_of(load(spec, tmp_path))
    assert {k: v & set(range(300)) for k, v in after.items()} == before


def test_a_missing_key_column_is_named(tmp_path):
    write_rows(tmp_path / "rows", np.arange(10), 1)
    spec = TableData(source="parquet", path=str(tmp_path / "rows"), features=["a"], label="y",
                     key="row_id")
    with pytest.raises(ValueError, match=r"data.key: column 'row_id' not in \['id', 'a', 'y'\]"):
        load(spec, tmp_path)


def test_a_table_too_small_for_a_split_says_so(tmp_path):
    write_rows(tmp_path / "rows", np.arange(3), 1)
    spec = TableData(source="parquet", path=str(tmp_path / "rows"), features=["a"], label="y")
    with pytest.raises(ValueError, match="the split leaves no (val|test|train) rows of 3"):
        load(spec, tmp_path)


def test_label_names_are_kept_found_sorted_or_in_the_order_the_spec_gives(tmp_path):
    path = tmp_path / "rows.parquet"
    labels = np.array(["dog", "cat", "bird"] * 20)
    pq.write_table(pa.table({"a": np.arange(60.0), "y": labels}), path)
    spec = TableData(source="parquet", path=str(path), features=["a"], label="y")
    found = load(spec, tmp_path)
    assert found.class_names == ("bird", "cat", "dog") and found.num_classes == 3
    rows = dict(zip(found.x_train[:, 0].tolist(), found.y_train.tolist(), strict=True))
    assert all(found.class_names[c] == labels[int(a)] for a, c in rows.items())
    given = load(spec.model_copy(update={"classes": ["dog", "cat", "bird", "fish"]}), tmp_path)
    assert given.num_classes == 4  # a class with no rows still has its index
    rows = dict(zip(given.x_train[:, 0].tolist(), given.y_train.tolist(), strict=True))
    assert all(given.class_names[c] == labels[int(a)] for a, c in rows.items())


def test_a_label_outside_the_given_classes_is_named(tmp_path):
    path = tmp_path / "rows.csv"
    pcsv.write_csv(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, 1, 7]}), path)
    spec = TableData(source="csv", path=str(path), features=["a"], label="y", classes=["0", "1"])
    with pytest.raises(ValueError) as err:
        load(spec, tmp_path)
    assert str(err.value) == ("data.label: 1 rows have a label not in data.classes, the first "
                              "'7' (classes: ['0', '1'])")


def test_a_directory_of_csv_files_and_json_lines_read_the_same_rows(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.normal(size=90), "b": rng.normal(size=90),
                      "y": np.array(["cat", "dog", "eel"] * 30)})
    (tmp_path / "csv").mkdir()
    (tmp_path / "json").mkdir()
    for i, start in enumerate(range(0, 90, 30)):
        pcsv.write_csv(table.slice(start, 30), tmp_path / "csv" / f"part-{i}.csv")
        (tmp_path / "json" / f"part-{i}.jsonl").write_text("".join(
            json.dumps(row) + "\n" for row in table.slice(start, 30).to_pylist()))
    spec = TableData(source="csv", path=str(tmp_path / "csv"), features=["a", "b"], label="y")
    from_csv = load(spec, tmp_path / "one")
    from_json = load(spec.model_copy(update={"source": "json", "path": str(tmp_path / "json")}),
                     tmp_path / "two")
    assert same_rows(from_csv, from_json) and from_csv.class_names == ("cat", "dog", "eel")
    assert len(from_csv.x_train) + len(from_csv.x_val) + len(from_csv.x_test) == 90
