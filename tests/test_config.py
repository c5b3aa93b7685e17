from pathlib import Path

import pytest
import yaml

from distillery.config import SpecError, TableData, load_spec, parse_spec

from helpers import REFERENCE_SPEC, ROOT

SHIPPED_SPECS = sorted((ROOT / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_validates(path):
    spec = parse_spec(path)
    if isinstance(spec.data, TableData):
        # text.yaml's files are written by `make demo-text` (python -m distillery.data.docstrings
        # text-task): the spec names what that writes
        assert spec.data.path == "./text-task/docstrings.parquet"
        assert spec.data.transfer.path == "./text-task/transfer.parquet"
        assert spec.teacher.model.path == "./text-task/all-MiniLM-L6-v2"
    else:
        assert load_spec(path).name


def test_reference_spec_values():
    spec = load_spec(REFERENCE_SPEC)
    assert spec.data.source == "mnist1d" and spec.data.seed == 42
    assert spec.distill.strategy == "response"
    assert spec.distill.num_workers == 2


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def reference() -> dict:
    return yaml.safe_load(REFERENCE_SPEC.read_text())


@pytest.mark.parametrize("overrides, message", [
    (["distill.temperature=-1"], "distill.temperature: must be > 0.0, got -1"),
    (["distill.alpha=1.5"], "distill.alpha: must be <= 1.0, got 1.5"),
    (["distill.zero_stage=4"], "distill.zero_stage: must be <= 3, got 4"),
    (["distill.temprature=2"], "distill.temprature: unknown key"),
    (["teacher.model.channels=[0]"], "teacher.model.channels.0: must be > 0, got 0"),
    (["teacher.model.arch=resnet"],
     "teacher.model.arch: unknown 'resnet'; valid: 'mlp', 'cnn1d', 'import', 'torchscript'"),
    (["teacher.inference.concurrency=[3,1]"], "teacher.inference: concurrency must be"),
    (["name=has space"], "name: String should match pattern"),
])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(SpecError) as err:
        load_spec(REFERENCE_SPEC, overrides)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(SpecError, match="^serving: unknown key$"):
        load_spec(write(tmp_path, {**reference(), "serving": {}}))


def test_missing_required_section(tmp_path):
    raw = reference()
    del raw["student"]
    with pytest.raises(SpecError, match="^student: required field is missing$"):
        load_spec(write(tmp_path, raw))


def test_missing_input_file_names_the_field(tmp_path):
    raw = reference()
    raw["data"] = {"source": "parquet", "path": "/nonexistent/rows.parquet",
                   "features": ["a"], "label": "y"}
    raw.pop("evaluate")  # its shifts regenerate mnist1d data
    with pytest.raises(SpecError, match="^data.path: file not found: /nonexistent/rows.parquet$"):
        load_spec(write(tmp_path, raw))


def test_missing_teacher_torchscript(tmp_path):
    raw = reference()
    raw["teacher"] = {"model": {"arch": "torchscript", "path": str(tmp_path / "t.ts")}}
    with pytest.raises(SpecError, match="^teacher.model.path: file not found"):
        load_spec(write(tmp_path, raw))


def test_untrainable_teacher_without_train_section(tmp_path):
    raw = reference()
    del raw["teacher"]["train"]
    with pytest.raises(SpecError, match="^teacher: train is required"):
        load_spec(write(tmp_path, raw))


@pytest.mark.parametrize("overrides, message", [
    (["distill.batch_size=255"], "distill: batch_size 255 must be a multiple of num_workers 2"),
    (["data.val_fraction=0"], "data.val_fraction: must be > 0.0, got 0"),
    (["teacher.model={arch: import, factory: 'no_such_pkg.mod:build'}"],
     "teacher.model.factory: cannot import 'no_such_pkg.mod'"),
    (["student.model={arch: import, factory: 'torch.nn:NoSuchLayer'}"],
     "student.model.factory: 'torch.nn' has no callable 'NoSuchLayer'"),
])
def test_cross_field_and_import_checks(overrides, message):
    with pytest.raises(SpecError) as err:
        load_spec(REFERENCE_SPEC, overrides)
    assert str(err.value).startswith(message)


def test_pretrained_teacher_must_not_carry_train_settings(tmp_path):
    script = tmp_path / "t.ts"
    script.write_bytes(b"not checked here")
    raw = reference()
    raw["teacher"]["model"] = {"arch": "torchscript", "path": str(script)}
    with pytest.raises(SpecError, match="^teacher: train must be omitted for a pretrained"):
        load_spec(write(tmp_path, raw))
    del raw["teacher"]["train"]
    assert load_spec(write(tmp_path, raw)).teacher.pretrained


def test_overrides_parse_yaml_values():
    spec = load_spec(REFERENCE_SPEC, ["distill.temperature=2.5", "distill.epochs=3",
                                      "student.model.channels=[4, 8]", "store=s3://b/p"])
    assert spec.distill.temperature == 2.5 and spec.distill.epochs == 3
    assert spec.student.model.channels == [4, 8]
    assert spec.store == "s3://b/p"


@pytest.mark.parametrize("item, message", [
    ("distill", "--set distill: expected key.path=value"),
    ("name.x=1", "--set name.x=1: name is not a section"),
])
def test_malformed_overrides(item, message):
    with pytest.raises(SpecError, match=message):
        load_spec(REFERENCE_SPEC, [item])


def test_missing_config_file(tmp_path):
    with pytest.raises(SpecError, match="^--config: file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_hash_changes_with_any_field():
    a = load_spec(REFERENCE_SPEC)
    b = load_spec(REFERENCE_SPEC, ["distill.alpha=0.5"])
    assert a.spec_hash() == load_spec(REFERENCE_SPEC).spec_hash()
    assert a.spec_hash() != b.spec_hash()


def test_a_missing_pretrained_second_teacher_is_named(tmp_path):
    raw = reference()
    raw["distill"].update(strategy="multi_teacher", multi_teacher={"teachers": [
        {"name": "b", "model": {"arch": "torchscript", "path": str(tmp_path / "b.ts")}}]})
    with pytest.raises(SpecError, match=r"^distill.multi_teacher.teachers.0.model.path: file "
                                        r"not found"):
        load_spec(write(tmp_path, raw))


@pytest.mark.parametrize(("distill", "message"), [
    ({"strategy": "feature"}, "^distill: strategy feature needs its `feature` section$"),
    ({"online": {"peers": [{"arch": "mlp"}]}},
     "^distill: `online` is only used with strategy online, not response$"),
    ({"strategy": "progressive", "progressive": {}},
     "^distill.progressive: give assistants, a curriculum, or both$"),
    ({"strategy": "multi_teacher", "multi_teacher": {
        "teachers": [{"name": "b", "model": {"arch": "mlp"}, "train": {}}], "weights": [1]}},
     r"^distill.multi_teacher: weights needs 2 values \(teacher and each of teachers\), got 1$"),
    ({"kl": "forwards"}, "^distill.kl: "),
    ({"strategy": "multi_teacher", "multi_teacher": {
        "teachers": [{"name": "cnn-teacher", "model": {"arch": "mlp"}, "train": {}}]}},
     "^distill: multi_teacher.teachers.0.name: 'cnn-teacher' is already the name of another "
     "teacher"),
    ({"strategy": "feature", "feature": {"pairs": []}}, "^distill.feature.pairs: "),
    ({"strategy": "progressive", "progressive": {"curriculum": {"start": 0}}},
     r"^distill.progressive.curriculum.start: must be > 0"),
])
def test_strategy_sections_are_validated(tmp_path, distill, message):
    raw = reference()
    raw["distill"].update(distill)
    with pytest.raises(SpecError, match=message):
        load_spec(write(tmp_path, raw))
