"""Text classification through the classifier pipeline: a text column tokenized block by block
into token ids keyed by the whole text, label names kept, bad text named; Hugging Face
classifiers as the models (a tiny BERT built from a config through every stage, and the real
MiniLM encoder where its package is installed)."""

import io
import json
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
import torch

from distillery.config import HFSpec, SpecError, TableData, load_spec
from distillery.data.splits import fixed_list_to_numpy
from distillery.data.table_source import combine
from distillery.data.tables import check_columns, class_index, encode, summarize
from distillery.data.text import (
    TextEncoding,
    descriptors,
    stored_encoding,
    text_encoding,
    tokenize,
)
from distillery.models import build_model, count_params
from distillery.models.text_classifier import stored_spec

from helpers import REFERENCE_SPEC, TINY_TEXT, TOPICS, deploy_app, free_port, text_task


def text_spec(tmp_path, **changes) -> tuple[TableData, TextEncoding]:
    spec = TableData(**{**text_task(tmp_path, rows=60, transfer_rows=10), **changes})
    return spec, text_encoding(spec.tokenizer, spec.max_length)


def test_text_rows_are_the_tokenizers_ids_keyed_by_the_whole_text(tmp_path):
    from transformers import AutoTokenizer

    spec, text = text_spec(tmp_path, max_length=8)
    long = "cat dog horse bird fish cow sheep rain snow"  # 9 words + [CLS], [SEP] > 8
    texts = ["the cat sat", long, long + " wind", "the cat sat"]
    batch = pa.table({"text": texts, "topic": ["animals", "animals", "weather", "animals"]})
    names = tuple(sorted(TOPICS))
    rows = encode(batch, spec, names, labelled=True, rates=(1.0, 1.0, 1.0), text=text)
    x = fixed_list_to_numpy(rows["x"])
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
    expected = tokenizer(texts, max_length=8, truncation=True, padding="max_length")["input_ids"]
    assert rows.schema.field("x").type.value_type == pa.int32()
    assert x.tolist() == expected
    # the two long texts share their first 8 ids but not their key; equal rows share one
    ids = rows["id"].to_pylist()
    assert (x[1] == x[2]).all() and ids[1] != ids[2] and ids[0] == ids[3]
    # label names kept: class index -> name round trip
    assert [names[i] for i in rows["label"].to_pylist()] == batch["topic"].to_pylist()
    assert class_index(batch["topic"], names).tolist() == [0, 0, 2, 0]
    summary = json.loads(summarize(batch, spec, True, None, text)["summary"][0].as_py())
    assert summary["truncated"] == 2 and summary["invalid"] == 0


def test_bad_text_is_named_dropped_or_counted(tmp_path, capsys):
    spec, text = text_spec(tmp_path)
    with pytest.raises(ValueError, match=r"^data.text: columns \['text'\] not in \['body', "):
        check_columns(pa.schema([("body", pa.string()), ("topic", pa.string())]), spec,
                      labelled=True, where="data.text")
    with pytest.raises(ValueError, match="^data.text: column 'text' is int64, not text"):
        check_columns(pa.schema([("text", pa.int64()), ("topic", pa.string())]), spec,
                      labelled=True, where="data.text")
    batch = pa.table({"text": ["rain today", None, "   ", "cheese"],
                      "topic": ["weather", "food", "food", "food"]})
    summary = json.loads(summarize(batch, spec, True, None, text)["summary"][0].as_py())
    assert summary["invalid"] == 2
    assert summary["first_invalid"]["column"] == "text"
    assert summary["first_invalid"]["value"] == "null"
    with pytest.raises(ValueError, match="column 'text' is null in a row .2 rows have a null or "
                                         "blank text; data.on_invalid=drop"):
        combine([summary], spec, spec.path, labelled=True)
    dropped = combine([summary], spec.model_copy(update={"on_invalid": "drop"}), spec.path,
                      labelled=False)
    assert dropped["counts"]["transfer"] == 2
    assert "dropped 2 of 4 rows" in capsys.readouterr().out
    rows = encode(batch, spec, tuple(sorted(TOPICS)), labelled=False, rates=(1.0, 1.0, 1.0),
                  text=text)
    assert rows.num_rows == 2  # the null and the blank text are not rows


def spec_overrides(tmp_path, *extra: str, rows: int = 60, transfer_rows: int = 10) -> list[str]:
    data = text_task(tmp_path, rows=rows, transfer_rows=transfer_rows)
    return [f"data={json.dumps(data)}", f"store={tmp_path}/store", *TINY_TEXT, *extra]


@pytest.mark.parametrize("override, message", [
    ("student.model={arch: mlp, hidden: [8]}",
     "student.model.arch: mlp takes numeric features; text data (data.text) takes arch: hf"),
    ("evaluate.shifts=[{kind: gaussian_noise, severities: [0.1]}]",
     "evaluate.shifts.0.kind: gaussian_noise perturbs numeric features"),
    ("data.tokenizer=null", "data.tokenizer: required unless the teacher is a saved"),
    ("data.max_length=64", "data.max_length: 64 is more than teacher's max_position_embeddings 32"),
    ("data.features=[a]", "data: give either features (numeric columns) or text"),
    ("student.model.config.hidden_size=15", "student.model.config: cannot build a bert sequence "
     "classifier from this config: The hidden size (15) is not a multiple"),
])
def test_a_text_spec_that_cannot_work_is_one_line_naming_the_field(tmp_path, override, message):
    with pytest.raises(SpecError) as err:
        load_spec(REFERENCE_SPEC, spec_overrides(tmp_path, override))
    assert str(err.value).startswith(message), str(err.value)


def test_hf_models_take_the_tokenizers_vocabulary_and_numeric_data_refuses_them(tmp_path):
    spec = load_spec(REFERENCE_SPEC, spec_overrides(tmp_path))
    words = sum(len(t.split()) for t in TOPICS.values()) + 10 + 4  # topics, filler, specials
    assert spec.student.model.config["vocab_size"] == words
    assert spec.student.model.config["pad_token_id"] == 0
    with pytest.raises(SpecError, match="^teacher.model.arch: hf takes text"):
        load_spec(REFERENCE_SPEC, [f"store={tmp_path}/store", *TINY_TEXT[:2]])


def test_the_minilm_encoder_loads_trains_a_step_and_exports(tmp_path):
    """The real pre-trained encoder (22.7M parameters) as a teacher's starting point: a new
    3-class head, one optimizer step, and the stored form (config + weights) and the traced
    TorchScript give the same logits."""
    minilm = pytest.importorskip(
        "all_minilm_l6_v2", reason="the text extra (pip install -e '.[text]') is not installed")
    path = str(minilm.extract_model(str(tmp_path)))
    model = build_model(HFSpec(arch="hf", path=path), 32, 3)
    assert 22_000_000 < count_params(model) < 23_000_000
    ids, truncated = tokenize(["Return the sum of a and b.", "Open a socket."],
                              text_encoding(path, 32))
    assert ids[0, 0] == 101 and not truncated.any()  # [CLS] of the uncased BERT vocabulary
    x = torch.from_numpy(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    rebuilt = build_model(stored_spec(model), 32, 3)
    rebuilt.load_state_dict(model.state_dict())
    buffer = io.BytesIO()
    torch.jit.save(model.traced(32), buffer)
    traced = torch.jit.load(io.BytesIO(buffer.getvalue()))
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(rebuilt.eval()(x), expected, atol=1e-5)
        assert torch.allclose(traced(x), expected, atol=1e-5)


@pytest.mark.usefixtures("local_ray")
def test_a_tiny_encoder_is_fine_tuned_cached_distilled_evaluated_and_exported(tmp_path):
    """As the reference pipeline's MiniLM: an encoder saved with its tokenizer (no head), the
    teacher's directory and the tokenizer the spec's only mention of it; its weights reach the
    training workers through the store."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from distillery.evaluation.report import evaluate
    from distillery.evaluation.selection import select_models
    from distillery.stages import Pipeline
    from distillery.storage import Store
    from distillery.store_layout import read_card

    overrides = spec_overrides(tmp_path, "name=text", rows=600, transfer_rows=1000)
    encoder = tmp_path / "encoder"
    config = load_spec(REFERENCE_SPEC, overrides).teacher.model.config
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(**config)).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(tmp_path / "tokenizer").save_pretrained(encoder)
    spec = load_spec(REFERENCE_SPEC, [*overrides, "data.tokenizer=null",
                                      f"teacher.model={{arch: hf, path: {encoder}}}"])
    assert spec.data.tokenizer == str(encoder)
    pipeline = Pipeline(spec)
    teacher = pipeline.train_teacher()
    assert teacher["class_names"] == sorted(TOPICS) and teacher["num_features"] == 24
    assert teacher["architecture"]["config"]["num_hidden_layers"] == 2
    manifest = pipeline.teacher_infer()
    assert manifest["rows"] == pipeline.source.count("train") + 1000
    student = pipeline.distill()
    assert student["params"] < teacher["params"] / 4
    assert student["metrics"]["test_accuracy"] > 0.45  # 3 classes: chance is 1/3
    report = evaluate(pipeline, select_models(pipeline, ["student"]))
    assert report["data"]["num_features"] == 24
    assert report["efficiency"]["models"]["student"]["vs_teacher"]["params"] > 4
    assert report["fidelity"]["student"]["agreement"] > 0.45
    # the store's card and weights rebuild the student without any directory of the spec, and
    # its TorchScript (traced) answers as it does
    store = Store(spec.store)
    parts = ("students", student["run_id"])
    card = read_card(store, parts)
    model = build_model(HFSpec(**card["architecture"]), card["num_features"], 3)
    model.load_state_dict(torch.load(io.BytesIO(store.read_bytes(*parts, "model.pt")),
                                     weights_only=True))
    scripted = torch.jit.load(io.BytesIO(store.read_bytes(*parts, "model.ts")))
    x = torch.from_numpy(pipeline.splits.x_test[:5])
    assert x.dtype == torch.int32
    with torch.no_grad():
        assert torch.allclose(scripted(x), model.eval()(x), atol=1e-5)
    served_text(load_spec(REFERENCE_SPEC, [
        *overrides, "data.tokenizer=null", f"teacher.model={{arch: hf, path: {encoder}}}",
        f"serve.student={student['run_id']}", "monitor.check_interval_s=null",
        "monitor.request_log.flush_seconds=0.2", "monitor.drift.min_rows=2"]), model.eval(), card)
    # feature KD, TinyBERT-style: hidden states through an adapter and attention maps, from the
    # teacher run live in the training worker; the student, of the teacher's width, starts from
    # its embeddings, head and second layer
    layer = "model.bert.encoder.layer.{}"
    feature = Pipeline(load_spec(REFERENCE_SPEC, [
        *overrides, "data.tokenizer=null", f"teacher.model={{arch: hf, path: {encoder}}}",
        "student.model.config={model_type: bert, hidden_size: 32, num_hidden_layers: 1, "
        "num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 32}",
        "student.init_from_teacher={layers: [1]}",
        "distill.strategy=feature", "distill.epochs=2", "distill.feature={cache: false, pairs: ["
        f"{{student: '{layer.format(0)}', teacher: '{layer.format(1)}'}}, "
        f"{{student: '{layer.format(0)}.attention.self', teacher: "
        f"'{layer.format(1)}.attention.self', attention: true, loss: cosine}}]}}"]))
    featured = feature.distill()
    assert featured["strategy"] == "feature"
    assert featured["init_from_teacher"] == {"teacher_fingerprint": teacher["fingerprint"],
                                             "layers": [1]}
    assert featured["metrics"]["test_accuracy"] > 0.45


def served_text(spec, student, card) -> None:
    """The text spec's Serve app: strings in (V1 and V2 BYTES), tokenized in the replica with
    the tokenizer stored beside the model, answers as the model gives them, texts logged."""
    import httpx
    from ray import serve

    from distillery.monitoring.check import run_check
    from distillery.monitoring.request_log import read_requests
    from distillery.storage import Store
    from distillery.store_layout import MONITOR_REPORTS

    store = Store(spec.store)
    parts = ("students", card["run_id"])
    encoding = stored_encoding(store, parts, card)
    assert encoding == text_encoding(spec.data.tokenizer, spec.data.max_length)
    texts = [TOPICS["food"], "word " * 500]  # the second is truncated to max_length
    port = free_port()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deploy_app(spec, port, "text-token")
        answer = http.post("/v1/models/student:predict", json={"instances": texts}).json()
        with torch.no_grad():
            expected = torch.softmax(student(torch.from_numpy(tokenize(texts, encoding)[0])), 1)
        assert np.allclose(answer["probabilities"], expected.numpy(), atol=1e-5)
        assert answer["labels"] == [card["class_names"][i] for i in answer["predictions"]]
        v2 = http.post("/v2/models/teacher/infer", json={"id": "r-7", "inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}).json()
        assert v2["id"] == "r-7" and v2["outputs"][0]["shape"] == [2, 3]
        assert http.post(f"/v1/models/{spec.name}:predict",
                         json={"instances": texts[:1]}).status_code == 200
        bad = http.post("/v1/models/student:predict", json={"instances": [[1.0, 2.0]]})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "wrong_type"
        metadata = http.get("/v2/models/student").json()
        assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    finally:
        serve.shutdown()
    logged = read_requests(store, datetime(2026, 1, 1, tzinfo=timezone.utc),
                           datetime.now(timezone.utc) + timedelta(minutes=1))
    assert logged.num_rows == 5
    assert set(logged.column("text").to_pylist()) == set(texts)
    assert logged.column("inputs").null_count == 5
    assert sorted(set(logged.column("text_length").to_pylist())) == sorted(map(len, texts))
    # drift compares the logged texts' descriptors (tokenized again) with the held-out rows'
    check = run_check(spec, datetime(2026, 1, 1, tzinfo=timezone.utc),
                      datetime.now(timezone.utc) + timedelta(minutes=1), send_alerts=False)
    answered = logged.column("model").to_pylist().count("student")  # 2, or 3 if routed to it
    assert check.drift["rows"]["current"] == answered  # the rows the student answered
    assert check.drift["number_of_columns"] == 5  # tokens, unknown_share and the 3 outputs
    # every reference text is in the vocabulary; "word" (500 times) is not
    assert "unknown_share" in [c["column"] for c in check.drift["drifted_columns"]]
    assert store.exists(*MONITOR_REPORTS, check.window, "report.html")


def test_text_descriptors_count_tokens_and_the_words_the_vocabulary_lacks(tmp_path):
    _, encoding = text_spec(tmp_path)  # word-level vocabulary of the topic words, max_length 24
    ids, truncated = tokenize(["cat dog", "cat zebra yak", "cat " * 30], encoding)
    assert truncated.tolist() == [False, False, True]
    assert descriptors(ids, encoding).tolist() == [[4, 0], [5, np.float32(0.4)], [24, 0]]


def test_the_reference_task_labels_docstrings_by_package_without_naming_it(tmp_path):
    from distillery.data import docstrings

    package = tmp_path / "pkg"
    (package / "tests").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The pkg package, for people."""\n')
    (package / "events.py").write_text(
        '"""Events."""\n\nclass Loop:\n    """Run callbacks until stopped."""\n\n'
        '    def stop(self):\n        """Stop the loop soon,\n        after this turn."""\n')
    (package / "tests" / "test_x.py").write_text('"""Tests are not the package\'s text."""\n')
    found = [(module, *row) for path, module in docstrings.module_files(tmp_path, "pkg")
             for row in docstrings.docstrings(path, module)]
    # "Events." is under MIN_WORDS; nested names are qualified, whitespace folded
    assert found == [("pkg", "pkg", "The pkg package, for people."),
                     ("pkg.events", "pkg.events.Loop", "Run callbacks until stopped."),
                     ("pkg.events", "pkg.events.Loop.stop", "Stop the loop soon, after this turn.")]
    table = docstrings.labelled_rows()
    assert set(table["package"].to_pylist()) == set(docstrings.PACKAGES)
    # the text is the docstring alone: no qualified name gives the package away
    assert not any(text.startswith(key) for text, key in
                   zip(table["text"].to_pylist(), table["key"].to_pylist(), strict=True))


def tiny_bert(hidden: int, layers: int):
    config = {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers,
              "num_attention_heads": 2, "intermediate_size": 2 * hidden,
              "max_position_embeddings": 32, "vocab_size": 40, "pad_token_id": 0}
    return build_model(HFSpec(arch="hf", config=config), 12, 3)


def test_text_feature_pairs_project_hidden_states_and_compare_attention_maps():
    """TinyBERT-style pairs: a student layer's (L, H) hidden states projected on H onto the
    teacher layer's, and the self-attention probabilities (heads averaged, (L, L)) as they
    are; the teacher's live maps are taken in eager attention and are distributions."""
    from distillery.strategies.feature import FeatureDistiller, map_key, output_shapes

    torch.manual_seed(0)
    student, teacher = tiny_bert(16, 1), tiny_bert(32, 2)
    layer, attention = "model.bert.encoder.layer.{}", "model.bert.encoder.layer.{}.attention.self"
    pairs = [{"student": layer.format(0), "teacher": layer.format(1), "loss": "mse",
              "weight": 1.0, "attention": False},
             {"student": attention.format(0), "teacher": attention.format(1), "loss": "cosine",
              "weight": 1.0, "attention": True}]
    student_shapes = output_shapes(student, [layer.format(0)], 12, [attention.format(0)])
    teacher_shapes = output_shapes(teacher, [layer.format(1)], 12, [attention.format(1)])
    assert student_shapes == {layer.format(0): [12, 16], map_key(attention.format(0), True):
                              [12, 12]}
    assert teacher_shapes[layer.format(1)] == [12, 32]
    distiller = FeatureDistiller(student, pairs, student_shapes, teacher_shapes, sequence=True)
    ids = torch.randint(4, 40, (3, 12))
    ids[:, 9:] = 0  # padding
    logits, (hidden, maps) = distiller.eval()(ids)
    assert logits.shape == (3, 3) and hidden.shape == (3, 12, 32) and maps.shape == (3, 12, 12)
    assert torch.allclose(maps.sum(-1), torch.ones(3, 12), atol=1e-5)
    assert (maps[:, :, 9:] == 0).all()  # nothing attends to padding


def test_an_attention_pair_on_a_module_without_weights_is_named(tmp_path):
    from distillery.strategies.feature import output_shapes

    with pytest.raises(ValueError, match="model.bert.encoder.layer.0 returned no attention "
                                         "weights: pair an attention module"):
        output_shapes(tiny_bert(16, 1), [], 12, ["model.bert.encoder.layer.0"])
    with pytest.raises(SpecError, match=r"^distill.feature: pairs \[0\] compare attention maps, "
                                        "which only a live teacher gives; set "
                                        "distill.feature.cache: false$"):
        load_spec(REFERENCE_SPEC, spec_overrides(
            tmp_path, "distill.strategy=feature",
            "distill.feature={pairs: [{student: a, teacher: b, attention: true}]}"))


def test_a_student_starts_from_the_teachers_embeddings_chosen_layers_and_head():
    from distillery.models.text_classifier import init_from_teacher, teacher_layers

    assert teacher_layers(3, 6, None) == [0, 2, 4]  # DistilBERT: every other layer
    assert teacher_layers(2, 5, None) == [0, 2]
    assert teacher_layers(2, 6, [5, 1]) == [5, 1]
    with pytest.raises(ValueError, match=r"layers \[0, 6\]: one teacher layer \(0 to 5\)"):
        teacher_layers(2, 6, [0, 6])
    with pytest.raises(ValueError, match="the student has 3 layers, the teacher 2"):
        teacher_layers(3, 2, None)
    torch.manual_seed(0)
    teacher, student = tiny_bert(32, 2), tiny_bert(32, 1)
    assert init_from_teacher(student, teacher, [1]) == [1]
    s, t = student.state_dict(), teacher.state_dict()
    for key in ("model.bert.embeddings.word_embeddings.weight", "model.classifier.weight",
                "model.bert.pooler.dense.weight"):
        assert torch.equal(s[key], t[key])
    layer = "model.bert.encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(s[layer.format(0)], t[layer.format(1)])
    with pytest.raises(ValueError, match=r"differs from the teacher's in hidden_size 16 vs 32, "
                                         r"intermediate_size 32 vs 64; .* fewer "
                                         "num_hidden_layers"):
        init_from_teacher(tiny_bert(16, 1), teacher, None)


@pytest.mark.parametrize("override, message", [
    ("student.model={arch: mlp, hidden: [8]}",
     "student.init_from_teacher: the teacher's layers start a student when both models are "
     "arch: hf"),
    ("distill={strategy: online, online: {peers: [{arch: hf, config: {model_type: bert}}]}}",
     "student.init_from_teacher: distill.strategy online trains other models than the "
     "student from the teacher; use response, feature or multi_teacher"),
])
def test_starting_a_student_from_the_teacher_is_refused_where_it_cannot_apply(tmp_path, override,
                                                                              message):
    with pytest.raises(SpecError, match=f"^{re.escape(message)}"):
        load_spec(REFERENCE_SPEC, spec_overrides(tmp_path, "student.init_from_teacher={}",
                                                 override))
