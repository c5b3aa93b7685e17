"""Strategy pieces as pure functions and modules: hooks, adapters, curriculum, exports."""

import math
from dataclasses import asdict
from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from distillery.config import CNN1DSpec, DistillSpec
from distillery.models import build_model
from distillery.strategies import STRATEGIES, build_strategy
from distillery.strategies.curriculum import (
    curriculum_weight,
    difficulty,
    pacing_fraction,
    thresholds,
)
from distillery.strategies.feature import Adapter, Capture, layer_names, output_shapes
from distillery.strategies.multi_teacher import MultiTeacherParams

from helpers import tiny_spec

STUDENT = CNN1DSpec(arch="cnn1d", channels=[8, 16], hidden=16)
TEACHER = CNN1DSpec(arch="cnn1d", channels=[64, 64, 64, 64], hidden=128)


def test_every_strategy_a_spec_can_name_is_registered():
    names = get_args(DistillSpec.model_fields["strategy"].annotation)
    assert set(STRATEGIES) == {*names, "supervised"}


def test_parameters_from_the_spec_reach_the_worker_as_fields(tmp_path):
    """As the train loop config carries them: a dict of the frozen parameters' fields."""
    spec = tiny_spec(tmp_path, "distill.strategy=multi_teacher",
                     "distill.multi_teacher={teachers: [{name: mlp-teacher, model: {arch: mlp, "
                     "hidden: [8]}, train: {}}], weights: [3, 1]}")
    params = MultiTeacherParams.from_spec(spec, None)
    assert params == MultiTeacherParams(temperature=spec.distill.temperature,
                                        alpha=spec.distill.alpha, kl="forward", num_teachers=2,
                                        weighting="fixed", teacher_weights=(3.0, 1.0))
    strategy = build_strategy("multi_teacher", **asdict(params))
    assert strategy.params == params
    assert strategy.needs == ("logits", "logits_1") and strategy.fixed.tolist() == [0.75, 0.25]
    assert [t.name for t in STRATEGIES["multi_teacher"].teachers(spec)] == [
        spec.teacher.name, "mlp-teacher"]


@pytest.mark.parametrize(("cache", "layers"), [(True, ["features.3"]), (False, [])])
def test_feature_distillation_caches_the_paired_teacher_layers(tmp_path, cache, layers):
    spec = tiny_spec(tmp_path, "distill.strategy=feature", "distill.feature={pairs: [{student: "
                     f"features.1, teacher: features.3}}], cache: {str(cache).lower()}}}")
    assert STRATEGIES["feature"].cache_layers(spec) == layers
    assert STRATEGIES["response"].cache_layers(spec) == []


def test_online_distillation_reads_no_teacher(tmp_path):
    spec = tiny_spec(tmp_path, "distill.strategy=online",
                     "distill.online={peers: [{arch: mlp, hidden: [8]}]}")
    assert STRATEGIES["online"].teachers(spec) == []


def test_each_progressive_stage_trains_as_response_kd():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    batch = {"logits": t, "label": torch.tensor([0, 1, -1, 2, -1]), "weight": torch.ones(5)}
    response, progressive = (build_strategy(name, temperature=2.0, alpha=0.25)
                             for name in ("response", "progressive"))
    assert progressive.weights == response.weights
    terms = {k: v.item() for k, v in progressive.loss_terms(s, batch).items()}
    assert terms == {k: v.item() for k, v in response.loss_terms(s, batch).items()}


def test_capture_keeps_exactly_the_named_modules_output():
    model = build_model(STUDENT, 40, 10)
    probe = Capture(model, ["features.1"])
    x = torch.randn(3, 40)
    model(x)
    expected = torch.relu(model.features[0](x.unsqueeze(1)))
    assert torch.equal(probe.outputs["features.1"], expected)


def test_output_shapes_of_the_reference_models():
    student, teacher = build_model(STUDENT, 40, 10), build_model(TEACHER, 40, 10)
    # first conv: k5 s1 p1 -> 38; later convs: k3 s2 p1 halve it
    assert output_shapes(student, ["features.1", "features.3"], 40) == {
        "features.1": [8, 38], "features.3": [16, 19]}
    assert output_shapes(teacher, ["features.3", "features.7"], 40) == {
        "features.3": [64, 19], "features.7": [64, 5]}
    assert "features.3" in layer_names(student) and "" not in layer_names(student)


@pytest.mark.parametrize(("s_shape", "t_shape", "kind"), [
    ([16, 19], [64, 19], nn.Conv1d),
    ([16, 19], [64, 5], nn.Conv1d),  # lengths differ: pooled to the teacher's
    ([16], [128], nn.Linear),
    ([4, 6, 6], [8, 3, 3], nn.Conv2d),
])
def test_adapter_projects_onto_the_teachers_shape(s_shape, t_shape, kind):
    adapter = Adapter(s_shape, t_shape)
    assert isinstance(adapter.proj, kind)
    assert list(adapter(torch.randn(2, *s_shape)).shape) == [2, *t_shape]


def test_adapter_refuses_maps_of_different_rank():
    with pytest.raises(ValueError, match=r"cannot project a \(16, 19\) map onto \(128,\)"):
        Adapter([16, 19], [128])


def feature_strategy():
    pairs = [{"student": "features.3", "teacher": "features.3", "loss": "mse", "weight": 2.0,
              "attention": False}]
    return build_strategy("feature", temperature=2.0, alpha=0.5, kl="forward", pairs=pairs,
                          student_shapes={"features.3": [16, 19]},
                          teacher_shapes={"features.3": [64, 19]})


def test_feature_strategy_reads_cached_maps_and_exports_only_the_student():
    strategy = feature_strategy()
    assert strategy.needs == ("logits", "features.features.3")
    assert strategy.weights == {"kd": 0.5, "task": 0.5, "feature0": 2.0}
    student = build_model(STUDENT, 40, 10)
    module = strategy.wrap(student)
    x = torch.randn(4, 40)
    batch = {"x": x, "label": torch.tensor([0, 1, -1, 2]), "weight": torch.ones(4),
             "logits": torch.randn(4, 10), "features.features.3": torch.randn(4, 64 * 19)}
    terms = strategy.loss_terms(module(x), batch)
    assert set(terms) == {"kd", "task", "feature0"} and terms["feature0"].item() > 0
    (exported,) = strategy.export(module.state_dict())
    assert exported.keys() == student.state_dict().keys()  # adapters dropped


def test_online_strategy_trains_peers_together_and_exports_each():
    strategy = build_strategy("online", temperature=1.0, alpha=0.5, kl="forward",
                              peers=[{"arch": "mlp", "hidden": [8]}], num_features=40,
                              num_classes=10)
    student = build_model(STUDENT, 40, 10)
    group = strategy.wrap(student)
    logits = group(torch.randn(3, 40))
    assert strategy.num_models == 2 and len(strategy.predictions(logits)) == 2
    states = strategy.export(group.state_dict())
    assert states[0].keys() == student.state_dict().keys()
    assert states[1].keys() == strategy.peers[0].state_dict().keys()


# ---------------------------------------------------------------- curriculum

def test_difficulty_by_entropy_and_by_teacher_loss():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    entropy = difficulty(logits, torch.tensor([0, -1]), "entropy")
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy.tolist() == pytest.approx([h, math.log(2)], abs=1e-6)
    loss = difficulty(logits, torch.tensor([1, -1]), "loss")  # row 1 unlabeled: entropy
    assert loss.tolist() == pytest.approx([-math.log(0.25), math.log(2)], abs=1e-6)


@pytest.mark.parametrize(("pacing", "expected"), [
    ("linear", [0.2, 0.6, 1.0, 1.0, 1.0]),
    ("root", [0.2, math.sqrt(0.04 + 0.96 * 0.5), 1.0, 1.0, 1.0]),
    ("step", [0.2, 0.2, 1.0, 1.0, 1.0]),
])
def test_pacing_grows_from_start_to_everything_by_full_at(pacing, expected):
    got = [pacing_fraction(e, 5, pacing, start=0.2, full_at=0.6) for e in range(5)]
    assert got == pytest.approx(expected)


def test_curriculum_puts_easy_rows_first():
    # confident (easy) rows have low entropy; the first epoch keeps only the easiest 40%
    logits = torch.tensor([[9.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [2.0, 0.0]])
    labels = torch.full((5,), -1)
    scores = difficulty(logits, labels, "entropy").numpy()
    first, last = thresholds(scores, [0.4, 1.0])
    assert curriculum_weight(logits, labels, "entropy", first).tolist() == [1, 0, 1, 0, 0]
    assert curriculum_weight(logits, labels, "entropy", last).tolist() == [1] * 5
    assert np.isinf(last)
