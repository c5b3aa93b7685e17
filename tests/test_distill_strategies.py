"""Every strategy end to end, small: Ray Train workers with DeepSpeed (2 in the online test,
where the peers train across ranks; 1 elsewhere, as a second worker adds a process start per
fit and no assertion needs it), real caches, exports that load back as plain models."""

from __future__ import annotations

import pytest
import torch

from distillery.config import MLPSpec, SpecError
from distillery.models import build_model, load_model
from distillery.stages import Pipeline

from helpers import tiny_spec

FEATURE = "{pairs: [{student: features.3, teacher: features.3, loss: cosine}]}"
ASSISTANT = "{assistants: [{arch: cnn1d, channels: [12, 16], hidden: 16}], curriculum: {}}"
# pretrained (TorchScript), so the test trains no second teacher
SECOND_TEACHER = ("{{teachers: [{{name: mlp-teacher, "
                  "model: {{arch: torchscript, path: {path}}}}}], weighting: confidence}}")
PEERS = "{peers: [{arch: mlp, hidden: [32]}]}"


def distill(store, *overrides):
    pipeline = Pipeline(tiny_spec(store, "distill.epochs=1", *overrides))
    card = pipeline.distill()
    model, stored = load_model(pipeline.store, ("students", card["run_id"]))
    assert stored["strategy"] == pipeline.spec.distill.strategy
    assert model(torch.zeros(2, pipeline.splits.num_features)).shape == (2, 10)
    return pipeline, card


@pytest.mark.parametrize("cached", [True, False])
def test_feature_distillation_from_cache_or_live_teacher(local_ray, cached_store_copy, cached):
    pipeline, card = distill(cached_store_copy, "distill.strategy=feature", "distill.num_workers=1",
                             f"distill.feature={FEATURE[:-1]}, cache: {str(cached).lower()}}}")
    caches = pipeline.store.listdir("cache")
    # the mapped layer lands in a cache of its own, or the teacher ran live in the workers
    assert any(key.count("-") == 2 for key in caches) == cached
    assert card["architecture"] == pipeline.spec.student.model.model_dump()


def test_feature_pair_naming_a_missing_layer_fails_before_training(local_ray, store_copy):
    pipeline = Pipeline(tiny_spec(store_copy, "distill.strategy=feature",
                                  "distill.feature={pairs: [{student: features.9, "
                                  "teacher: features.3}]}"))
    with pytest.raises(SpecError, match=r"distill.feature.pairs.0.student: no layer "
                                        r"'features.9' in the student; valid: \['features'"):
        pipeline.distill()
    assert not pipeline.store.exists("students")


def test_teacher_assistant_chain_with_curriculum_resumes_at_the_unfinished_stage(
        local_ray, cached_store_copy, capsys, monkeypatch):
    pipeline = Pipeline(tiny_spec(cached_store_copy, "distill.epochs=1", "distill.num_workers=1",
                                  "distill.strategy=progressive",
                                  f"distill.progressive={ASSISTANT}"))
    # a crash after the assistant, as the student's training starts (two Ray Train fits in
    # all, not three: no student is trained only to be thrown away)
    fit = Pipeline._fit

    def crash_at_the_student(self, model_spec, train_spec, strategy, params, label, *args,
                             **kwargs):
        if label == "student":
            raise RuntimeError("crash after the assistant")
        return fit(self, model_spec, train_spec, strategy, params, label, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(RuntimeError,
                                                       match="crash after the assistant"):
        patch.setattr(Pipeline, "_fit", crash_at_the_student)
        pipeline.distill()
    assert "curriculum: share of rows per epoch" in capsys.readouterr().out
    (run_id,) = pipeline.unfinished_runs()
    assistant = pipeline.store.read_json("students", run_id, "assistants", "0", "card.json")
    assert assistant["role"] == "assistant"

    # the rerun keeps the assistant and trains only the student, from the assistant
    card = pipeline.distill(run_id)
    out = capsys.readouterr().out
    assert "assistant 0: training" not in out and "student: training" in out
    assert pipeline.store.read_json("students", run_id, "assistants", "0", "card.json") == (
        assistant)
    assert card["run_id"] == run_id and card["strategy"] == "progressive"
    assert card["teacher_fingerprint"] == assistant["fingerprint"]  # learned from the TA
    model, _ = load_model(pipeline.store, ("students", run_id))
    assert model(torch.zeros(2, pipeline.splits.num_features)).shape == (2, 10)


def test_multi_teacher_stores_both_teachers_and_joins_their_caches(local_ray, cached_store_copy,
                                                                    tmp_path, capsys):
    scripted = tmp_path / "mlp.ts"
    torch.jit.save(torch.jit.script(build_model(MLPSpec(arch="mlp", hidden=[32]), 40, 10)),
                   str(scripted))
    pipeline = Pipeline(tiny_spec(cached_store_copy, "distill.epochs=1", "distill.num_workers=1",
                                  "distill.strategy=multi_teacher",
                                  f"distill.multi_teacher={SECOND_TEACHER.format(path=scripted)}"))
    pipeline.ensure_teachers()  # imports the pretrained one, keeps the trained one
    assert pipeline.store.exists("teachers", "mlp-teacher", "latest.json")
    card = pipeline.distill()  # reads logits_1, which only the join provides
    assert len(pipeline.store.listdir("cache")) == 2
    assert card["strategy"] == "multi_teacher"
    # the join lost no row: the student's last epoch saw every cached row
    rows = pipeline.splits.num_distill_rows
    assert f"student: training on {rows} rows" in capsys.readouterr().out


def test_online_mutual_learning_exports_every_peer_and_picks_the_best(local_ray, store_copy):
    pipeline, card = distill(store_copy, "distill.strategy=online", f"distill.online={PEERS}")
    run = ("students", card["run_id"])
    peers = [pipeline.store.read_json(*run, "peers", k, "card.json") for k in ("0", "1")]
    assert peers[1]["architecture"]["arch"] == "mlp"
    # the student is the best peer of the student's architecture: here the only one
    student = pipeline.spec.student.model.model_dump()
    assert card["architecture"] == peers[0]["architecture"] == student
    assert card["metrics"] == peers[0]["metrics"]
    assert not pipeline.store.exists("cache")  # no teacher outputs needed
