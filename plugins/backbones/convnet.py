"""A small convolutional backbone that trains in seconds on a CPU (the embedded default)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hashbench import Backbone, hookimpl, param


@dataclass(frozen=True)
class ConvNetParams:
    width: int = param(32, "channels of the first block; each of the 4 blocks doubles it")

    def validate(self) -> None:
        if self.width < 4:
            raise ValueError("width must be at least 4")


def _block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


class ConvNet(Backbone):
    """Four conv-BN-ReLU blocks and global average pooling; any input size."""

    name = "convnet"
    Params = ConvNetParams

    def build(self, image_size: int):
        w = self.params.width
        module = nn.Sequential(
            *_block(3, w, True), *_block(w, 2 * w, True), *_block(2 * w, 4 * w, True), *_block(4 * w, 8 * w, False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        return module, 8 * w


@hookimpl
def register_backbones(register):
    register(ConvNet)
