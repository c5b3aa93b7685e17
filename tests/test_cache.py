"""teacher-infer on the real local Ray: cache contents, reuse, invalidation, interrupted writes."""

import numpy as np
import pyarrow.parquet as pq
import torch

from distillery.config import MLPSpec
from distillery.data.splits import fixed_list_to_numpy
from distillery.models import build_model, load_model
from distillery.stages import Pipeline
from distillery.store_layout import MANIFEST

from helpers import tiny_spec


def read_rows(store, manifest):
    key = f"{manifest['teacher_fingerprint']}-{manifest['data_fingerprint']}"
    files = sorted((store / "cache" / key).glob("*.parquet"))
    return key, files, pq.ParquetDataset(files).read().sort_by("id")


def test_cache_holds_teacher_logits_with_fingerprints(store_copy, local_ray, capsys):
    pipeline = Pipeline(tiny_spec(store_copy))
    manifest = pipeline.teacher_infer()
    assert "wrote 2720 rows" in capsys.readouterr().out
    key, files, table = read_rows(store_copy, manifest)
    assert table.num_rows == manifest["rows"] == 720 + 2000
    assert manifest["labelled_rows"] == 720 and table["label"].null_count == 2000
    assert table.column_names == ["id", "x", "label", "logits"]
    meta = pq.read_metadata(files[0]).metadata
    assert meta[b"teacher_fingerprint"].decode() == manifest["teacher_fingerprint"]
    assert meta[b"data_fingerprint"].decode() == manifest["data_fingerprint"]
    # the cached logits are the teacher's own outputs on those rows
    teacher, _ = load_model(pipeline.store, pipeline.teacher_parts())
    x = fixed_list_to_numpy(table["x"])
    with torch.inference_mode():
        expected = teacher(torch.tensor(x)).numpy()
    np.testing.assert_allclose(fixed_list_to_numpy(table["logits"]), expected, atol=1e-5)


def test_same_teacher_and_data_reuse_the_cache(cached_store_copy, local_ray, capsys):
    first = Pipeline(tiny_spec(cached_store_copy)).teacher_infer()
    key = f"{first['teacher_fingerprint']}-{first['data_fingerprint']}"
    cache = cached_store_copy / "cache" / key
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    capsys.readouterr()
    again = Pipeline(tiny_spec(cached_store_copy)).teacher_infer()
    assert again == first
    assert "reusing cache" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_changed_data_or_teacher_makes_a_new_cache(cached_store_copy, local_ray, tmp_path):
    base = Pipeline(tiny_spec(cached_store_copy)).teacher_infer()
    other_data = Pipeline(tiny_spec(cached_store_copy, "data.transfer.seed=99")).teacher_infer()
    assert other_data["data_fingerprint"] != base["data_fingerprint"]
    assert other_data["teacher_fingerprint"] == base["teacher_fingerprint"]
    # another teacher of the same name: a pretrained one, imported (no training to wait for)
    scripted = tmp_path / "other.ts"
    torch.jit.save(torch.jit.script(build_model(MLPSpec(arch="mlp", hidden=[8]), 40, 10)),
                   str(scripted))
    replaced = Pipeline(tiny_spec(cached_store_copy, f"teacher.model={{arch: torchscript, path: "
                                              f"{scripted}}}", "teacher.train=null"))
    replaced.train_teacher()
    other_teacher = replaced.teacher_infer()
    assert other_teacher["teacher_fingerprint"] != base["teacher_fingerprint"]
    assert len(list((cached_store_copy / "cache").iterdir())) == 3


def test_an_uncommitted_cache_is_rebuilt_not_read(cached_store_copy, local_ray, capsys):
    pipeline = Pipeline(tiny_spec(cached_store_copy))
    manifest = pipeline.teacher_infer()
    key = f"{manifest['teacher_fingerprint']}-{manifest['data_fingerprint']}"
    # simulate a crash mid-write: the commit marker never made it, a stray file did
    (cached_store_copy / "cache" / key / MANIFEST).unlink()
    (cached_store_copy / "cache" / key / "partial.parquet").write_bytes(b"PAR1 torn")
    capsys.readouterr()
    rebuilt = Pipeline(tiny_spec(cached_store_copy)).teacher_infer()
    assert "wrote 2720 rows" in capsys.readouterr().out
    assert not (cached_store_copy / "cache" / key / "partial.parquet").exists()
    assert rebuilt["rows"] == 2720


def test_bring_your_own_teachers_are_stored_and_used(cached_store_copy, local_ray, tmp_path):
    trained = Pipeline(tiny_spec(cached_store_copy))
    parts = trained.teacher_parts()
    _, _, expected = read_rows(cached_store_copy, trained.teacher_infer())
    # the same trained network, brought as TorchScript and as factory + weights
    script = tmp_path / "teacher.ts"
    script.write_bytes((cached_store_copy.joinpath(*parts) / "model.ts").read_bytes())
    weights = tmp_path / "teacher.pt"
    weights.write_bytes((cached_store_copy.joinpath(*parts) / "model.pt").read_bytes())
    byo = {
        "torchscript": f"{{arch: torchscript, path: '{script}'}}",
        "import": ("{arch: import, factory: 'distillery.models.registry:CNN1D', "
                   f"weights: '{weights}', kwargs: {{num_features: 40, num_classes: 10, "
                   "channels: [16, 16], kernel_size: 5, hidden: 32}}"),
    }
    for name, model in byo.items():
        pipeline = Pipeline(tiny_spec(cached_store_copy, f"teacher.model={model}",
                                      "teacher.train=null", f"teacher.name={name}"))
        card = pipeline.train_teacher()
        assert card["params"] == trained.store.read_json(*parts, "card.json")["params"]
        # later stages load the stored copy, never the user's file
        (script if name == "torchscript" else weights).unlink()
        _, _, table = read_rows(cached_store_copy, pipeline.teacher_infer())
        np.testing.assert_allclose(fixed_list_to_numpy(table["logits"]),
                                   fixed_list_to_numpy(expected["logits"]), atol=1e-5)
