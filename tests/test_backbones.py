"""torchvision backbones: output shapes at 32 and 224 px, and offline pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from hashbench import DataError
from hashbench.loading import instantiate

DIMS = {"resnet18": 512, "resnet50": 2048, "vgg11": 4096, "alexnet": 4096}


@pytest.mark.parametrize("name", sorted(DIMS))
@pytest.mark.parametrize("size", [32, 224])
def test_feature_shapes(name, size):
    module, dim = instantiate("backbone", {"name": name, "params": {}}).build(size)
    assert dim == DIMS[name]
    with torch.no_grad():
        out = module.eval()(torch.rand(2, 3, size, size))
    assert out.shape == (2, dim)


def test_missing_weights_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        instantiate("backbone", {"name": "resnet18", "params": {"pretrained": True}}).build(32)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "download.pytorch.org" in message


def test_loads_weights_from_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.25)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "resnet18-f37072fd.pth")
    module, _ = instantiate("backbone", {"name": "resnet18", "params": {"pretrained": True}}).build(32)
    assert torch.all(module.conv1.weight == 0.25)
    assert module.conv1.stride == (1, 1)  # the small-input stem kept the pretrained 7x7 weights


def test_a_corrupt_weights_file_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="could not load"):
        instantiate("backbone", {"name": "alexnet", "params": {"pretrained": True}}).build(224)
