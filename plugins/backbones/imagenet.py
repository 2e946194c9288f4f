"""ImageNet backbones from torchvision: resnet18, resnet50, vgg11, alexnet (pretrained optional).

Pretrained weights are read, never downloaded, from torchvision's cache,
``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/checkpoints`` by default); a missing file
ends with a DataError naming the file, the folder and the URL to fetch it from.

Small inputs: below ``SMALL_INPUT`` pixels the stem is adapted so that a 32×32 image keeps a useful
spatial extent, without changing any weight's shape (so pretrained weights still load):
ResNets get a stride-1 first convolution and no max-pool (the usual CIFAR variant); AlexNet gets a
stride-1 first convolution (with stride 4 its feature map would vanish below 63 pixels). VGG-11 needs
no change: its adaptive pooling accepts the 1×1 map a 32×32 image leaves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from hashbench import Backbone, DataError, hookimpl, param

SMALL_INPUT = 64  # images smaller than this get the small-input stem


@dataclass(frozen=True)
class ImageNetParams:
    pretrained: bool = param(False, "load ImageNet weights from the torchvision cache (never downloads)")


def weights_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision keeps the file of ``weights``: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(model: nn.Module, weights: torchvision.models.WeightsEnum, name: str) -> None:
    """Load ``weights`` into ``model`` from the local cache, or explain exactly what to put where."""
    path = weights_path(weights)
    if not path.is_file():
        raise DataError(
            f"pretrained weights for backbone '{name}' are missing: expected the file {path.name} in "
            f"{path.parent}. hashbench never downloads; fetch {weights.url} on a machine with network "
            f"access and copy it there (set TORCH_HOME to use another cache folder), or set pretrained = false."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"could not load pretrained weights for '{name}' from {path}: {exc}") from exc


class TorchvisionBackbone(Backbone):
    """Shared by the torchvision backbones: build the network, load weights, adapt, cut the classifier."""

    Params = ImageNetParams
    weights: torchvision.models.WeightsEnum

    def network(self) -> nn.Module:
        raise NotImplementedError

    def adapt(self, net: nn.Module, image_size: int) -> tuple[nn.Module, int]:
        """Return ``(feature extractor, feature_dim)`` for ``image_size`` from the full network."""
        raise NotImplementedError

    def build(self, image_size: int) -> tuple[nn.Module, int]:
        net = self.network()
        if self.params.pretrained:
            load_pretrained(net, self.weights, self.name)
        return self.adapt(net, image_size)


class _ResNet(TorchvisionBackbone):
    def adapt(self, net, image_size):
        if image_size < SMALL_INPUT:
            net.conv1.stride = (1, 1)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim


class ResNet18(_ResNet):
    """ResNet-18 (512-d features); stride-1 stem without max-pool below 64 px."""

    name = "resnet18"
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1

    def network(self):
        return torchvision.models.resnet18(weights=None)


class ResNet50(_ResNet):
    """ResNet-50 (2048-d features); stride-1 stem without max-pool below 64 px."""

    name = "resnet50"
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1

    def network(self):
        return torchvision.models.resnet50(weights=None)


def _without_last_linear(net: nn.Module) -> tuple[nn.Module, int]:
    """features -> avgpool -> classifier minus its final Linear: the 4096-d fc7 features hashing uses."""
    head = list(net.classifier.children())[:-1]
    dim = net.classifier[-1].in_features
    return nn.Sequential(net.features, net.avgpool, nn.Flatten(), *head), dim


class VGG11(TorchvisionBackbone):
    """VGG-11 up to fc7 (4096-d features); any size from 32 px."""

    name = "vgg11"
    weights = torchvision.models.VGG11_Weights.IMAGENET1K_V1

    def network(self):
        return torchvision.models.vgg11(weights=None)

    def adapt(self, net, image_size):
        return _without_last_linear(net)


class AlexNet(TorchvisionBackbone):
    """AlexNet up to fc7 (4096-d features), as in DPSH/HashNet; stride-1 first conv below 64 px."""

    name = "alexnet"
    weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1

    def network(self):
        return torchvision.models.alexnet(weights=None)

    def adapt(self, net, image_size):
        if image_size < SMALL_INPUT:
            net.features[0].stride = (1, 1)
        return _without_last_linear(net)


@hookimpl
def register_backbones(register):
    for cls in (ResNet18, ResNet50, VGG11, AlexNet):
        register(cls)
