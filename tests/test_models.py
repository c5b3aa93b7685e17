import pytest
import torch

from distillery.config import CNN1DSpec, ImportSpec, MLPSpec, TorchScriptSpec
from distillery.models import (
    build_model,
    count_params,
    fingerprint,
    load_model,
    model_card,
    save_model,
)
from distillery.storage import Store


def test_cnn1d_shapes_and_params():
    spec = CNN1DSpec(arch="cnn1d", channels=[8, 16], hidden=16)
    model = build_model(spec, num_features=40, num_classes=10)
    assert model(torch.randn(3, 40)).shape == (3, 10)
    # conv(1->8,k5)=48, conv(8->16,k3)=400, length 40->38->19: 304*16+16=4880, 16*10+10=170
    assert count_params(model) == 48 + 400 + 4880 + 170


def test_cnn1d_pooling_head_and_mlp():
    pooled = build_model(CNN1DSpec(arch="cnn1d", channels=[4]), 40, 3)
    assert pooled(torch.randn(2, 40)).shape == (2, 3)
    mlp = build_model(MLPSpec(arch="mlp", hidden=[5]), 40, 3)
    assert count_params(mlp) == 40 * 5 + 5 + 5 * 3 + 3


def test_fingerprint_tracks_weights_and_architecture():
    spec = MLPSpec(arch="mlp", hidden=[4])
    torch.manual_seed(0)
    a = build_model(spec, 6, 2)
    b = build_model(spec, 6, 2)
    b.load_state_dict(a.state_dict())
    assert fingerprint(spec, a) == fingerprint(spec, b)
    with torch.no_grad():
        b.head.bias += 1
    assert fingerprint(spec, a) != fingerprint(spec, b)
    assert fingerprint(MLPSpec(arch="mlp", hidden=[4, 4]), a) != fingerprint(spec, a)


def test_save_and_load_round_trip_with_card(tmp_path):
    store = Store(str(tmp_path))
    spec = CNN1DSpec(arch="cnn1d", channels=[4, 4], hidden=8)
    model = build_model(spec, 40, 10).eval()
    card = save_model(store, ("students", "r1"), model,
                      model_card(model, spec, num_features=40, num_classes=10, role="student"))
    assert card["params"] == count_params(model)
    assert card["size_bytes"]["model.pt"] > 0 and card["versions"]["torch"]
    loaded, loaded_card = load_model(store, ("students", "r1"))
    x = torch.randn(5, 40)
    assert torch.equal(loaded(x), model(x))
    assert loaded_card == card
    scripted = torch.jit.load(str(tmp_path / "students" / "r1" / "model.ts"))
    assert torch.allclose(scripted(x), model(x))


def test_bring_your_own_factory_and_weights(tmp_path):
    spec = ImportSpec(arch="import", factory="torch.nn:Linear",
                      kwargs={"in_features": 4, "out_features": 2})
    model = build_model(spec, 4, 2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with_weights = build_model(spec.model_copy(update={"weights": str(tmp_path / "w.pt")}), 4, 2)
    assert torch.equal(with_weights.weight, model.weight)


def test_bring_your_own_torchscript(tmp_path):
    net = torch.jit.script(torch.nn.Linear(4, 3))
    net.save(str(tmp_path / "t.ts"))
    model = build_model(TorchScriptSpec(arch="torchscript", path=str(tmp_path / "t.ts")), 4, 3)
    x = torch.randn(2, 4)
    assert torch.equal(model(x), net(x))


def test_factory_path_is_validated():
    with pytest.raises(ValueError, match="String should match pattern"):
        ImportSpec(arch="import", factory="not a path")
