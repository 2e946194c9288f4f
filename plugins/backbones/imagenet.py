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
from torch import nn

from hashbench import Backbone, DataError, hookimpl, param

SMALL_INPUT = 64  # images smaller than this get the small-input stem


def _models():
    """torchvision.models, imported when a network is built: importing torchvision costs seconds, which
    every command that lists the plugins (``hashbench plugins``, ``plan``) would otherwise pay."""
    import torchvision

    return torchvision.models


@dataclass(frozen=True)
class ImageNetParams:
    pretrained: bool = param(False, "load ImageNet weights from the torchvision cache (never downloads)")


def weights_path(weights) -> Path:
    """Where torchvision keeps the file of ``weights``: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(model: nn.Module, weights, name: str) -> None:
    """Load ``weights`` (a torchvision ``WeightsEnum``) into ``model`` from the local cache, or explain
    exactly what to put where."""
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
    architecture: str  # the torchvision.models function, e.g. "resnet18"
    weights_enum: str  # its weights enum, e.g. "ResNet18_Weights", of which IMAGENET1K_V1 is used

    def network(self) -> nn.Module:
        return getattr(_models(), self.architecture)(weights=None)

    def weights(self):
        return getattr(_models(), self.weights_enum).IMAGENET1K_V1

    def adapt(self, net: nn.Module, image_size: int) -> tuple[nn.Module, int]:
        """Return ``(feature extractor, feature_dim)`` for ``image_size`` from the full network."""
        raise NotImplementedError

    def build(self, image_size: int) -> tuple[nn.Module, int]:
        net = self.network()
        if self.params.pretrained:
            load_pretrained(net, self.weights(), self.name)
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
    architecture = "resnet18"
    weights_enum = "ResNet18_Weights"


class ResNet50(_ResNet):
    """ResNet-50 (2048-d features); stride-1 stem without max-pool below 64 px."""

    name = "resnet50"
    architecture = "resnet50"
    weights_enum = "ResNet50_Weights"
    testing_slow = "25M weights built, trained and round-tripped several times by check_backbone"


def _without_last_linear(net: nn.Module) -> tuple[nn.Module, int]:
    """features -> avgpool -> classifier minus its final Linear: the 4096-d fc7 features hashing uses."""
    head = list(net.classifier.children())[:-1]
    dim = net.classifier[-1].in_features
    return nn.Sequential(net.features, net.avgpool, nn.Flatten(), *head), dim


class VGG11(TorchvisionBackbone):
    """VGG-11 up to fc7 (4096-d features); any size from 32 px."""

    name = "vgg11"
    architecture = "vgg11"
    weights_enum = "VGG11_Weights"

    def adapt(self, net, image_size):
        return _without_last_linear(net)


class AlexNet(TorchvisionBackbone):
    """AlexNet up to fc7 (4096-d features), as in DPSH/HashNet; stride-1 first conv below 64 px."""

    name = "alexnet"
    architecture = "alexnet"
    weights_enum = "AlexNet_Weights"

    def adapt(self, net, image_size):
        if image_size < SMALL_INPUT:
            net.features[0].stride = (1, 1)
        return _without_last_linear(net)


@hookimpl
def register_backbones(register):
    for cls in (ResNet18, ResNet50, VGG11, AlexNet):
        register(cls)
