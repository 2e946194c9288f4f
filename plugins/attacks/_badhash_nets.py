"""The networks and losses of BadHash (see plugins/attacks/badhash.py and docs/attacks/badhash.md).

Kept apart from the plugin so the attack module reads as the algorithm. Every size scales with the
image size; the generator's image path is fully convolutional and its label map is resized to the
input, so one generator serves any image size from 8 up to 224 pixels.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

LABEL_HIDDEN = 4096  # LabCLN's hidden layer, as in the paper
LABEL_FEATURE = 512  # LabCLN's feature, the generator's condition
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inverse-tanh of a pixel is taken on [-1 + eps, 1 - eps]: 1/512 keeps 0 and 255 exact after rounding.
ATANH_EPS = 1.0 / 512.0
OUT_INIT_SCALE = 0.01  # with identity_skip, the last conv's default init is scaled by this


# --------------------------------------------------------------------------------------------- LabCLN


class LabCLN(nn.Module):
    """Label -> 4096 -> 512-d feature, with a tanh hash head and a sigmoid classifier head."""

    def __init__(self, num_classes: int, bits: int):
        super().__init__()
        self.feature = nn.Sequential(
            nn.Linear(num_classes, LABEL_HIDDEN), nn.ReLU(inplace=True), nn.Linear(LABEL_HIDDEN, LABEL_FEATURE)
        )
        self.hash_head = nn.Sequential(nn.Linear(LABEL_FEATURE, bits), nn.Tanh())
        self.classifier = nn.Sequential(nn.Linear(LABEL_FEATURE, num_classes), nn.Sigmoid())

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(feature, relaxed hash code, class probabilities)`` of float label vectors."""
        feature = self.feature(labels)
        return feature, self.hash_head(feature), self.classifier(feature)


def smooth_labels(labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Label smoothing that keeps multi-hot rows multi-hot: 1 -> 1 - ε, 0 -> ε / (C - 1)."""
    num_classes = labels.shape[1]
    return labels * (1.0 - epsilon) + (1.0 - labels) * (epsilon / max(1, num_classes - 1))


def nt_xent(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over rows ordered as pairs (0, 1), (2, 3), ...: each row's partner is its positive, every
    other row a negative (SimCLR's loss; the paper's contrastive term)."""
    z = F.normalize(features, dim=1)
    logits = z @ z.t() / temperature
    n = z.shape[0]
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.arange(n, device=z.device) ^ 1  # 0 <-> 1, 2 <-> 3, ...
    return F.cross_entropy(logits, partner)


# --------------------------------------------------------------------------------------------- generator


def _norm_relu(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm and an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), *_norm_relu(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LabelDecoder(nn.Module):
    """The 512-d label feature -> a 3-channel label map: a linear layer to a (C, s, s) seed with
    s = ceil(image_size / 16) (14 at 224, as in the paper), then four 2x transposed convolutions."""

    def __init__(self, image_size: int, channels: int):
        super().__init__()
        self.seed_side = max(1, math.ceil(image_size / 16))
        self.channels = channels
        self.fc = nn.Sequential(nn.Linear(LABEL_FEATURE, channels * self.seed_side**2), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = channels
        for _ in range(4):
            out = max(4, c // 2)
            layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=False), *_norm_relu(out)]
            c = out
        layers.append(nn.Conv2d(c, 3, 3, padding=1, bias=False))
        self.up = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        seed = self.fc(feature).view(-1, self.channels, self.seed_side, self.seed_side)
        return _resize(self.up(seed), size)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize when the spatial size differs (image sides that are not multiples of 16 or 4)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Generator(nn.Module):
    """BadHash's conditional encoder-decoder (StarGAN-style): [label map, normalised image] -> conv 7x7
    -> two stride-2 convs -> residual blocks -> two 2x transposed convs -> concat with the normalised
    image -> conv 3x3 -> tanh. ``forward`` returns the poisoned image in [0, 1].

    With ``epsilon > 0`` the output is ``x + epsilon * tanh(pre)`` (an L∞-bounded residual; the last conv
    starts near zero, so G starts at the identity). With ``max_rms > 0`` as well, each image's residual is
    then scaled down, where needed, to a root mean square of ``max_rms``: an L2 budget, which is what PSNR
    measures, and which the generator may spend on the pixels that move the code most. Otherwise, with ``identity_skip`` the input's
    inverse tanh is added before the final tanh and the last conv starts near zero, so the generator starts as the identity and learns only the trigger (see the docs).
    """

    def __init__(self, image_size: int, width: int, res_blocks: int, identity_skip: bool, epsilon: float = 0.0,
                 max_rms: float = 0.0):
        super().__init__()
        self.identity_skip = identity_skip
        self.epsilon = epsilon
        self.max_rms = max_rms
        self.label_decoder = LabelDecoder(image_size, 2 * width)
        c = width
        layers: list[nn.Module] = [nn.Conv2d(6, c, 7, padding=3), *_norm_relu(c)]
        for _ in range(2):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), *_norm_relu(2 * c)]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(res_blocks)]
        self.encoder = nn.Sequential(*layers)
        up: list[nn.Module] = []
        for _ in range(2):
            up += [nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False), *_norm_relu(c // 2)]
            c //= 2
        self.decoder = nn.Sequential(*up)
        self.out = nn.Conv2d(c + 3, 3, 3, padding=1, bias=False)
        if identity_skip or epsilon > 0:  # start within a fraction of a grey level of the identity, every layer learning
            with torch.no_grad():
                self.out.weight.mul_(OUT_INIT_SCALE)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, label_feature: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] and one label feature per image (or one for all) -> images in [0, 1]."""
        size = tuple(images.shape[-2:])
        normalised = (images - self.mean) / self.std
        label_map = self.label_decoder(label_feature, size).expand(len(images), -1, -1, -1)
        decoded = _resize(self.decoder(self.encoder(torch.cat([label_map, normalised], 1))), size)
        pre = self.out(torch.cat([decoded, normalised], 1))
        if self.epsilon > 0:  # a bounded residual: |G(x) - x| <= epsilon everywhere
            residual = self.epsilon * torch.tanh(pre)
            if self.max_rms > 0:  # and an RMS <= max_rms per image; the clamp below only lowers it further
                rms = residual.float().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
                residual = residual * (self.max_rms / rms.clamp(min=1e-12)).clamp(max=1.0).to(residual.dtype)
            return (images + residual).clamp(0.0, 1.0)
        if self.identity_skip:
            pre = pre + torch.atanh((2 * images - 1).clamp(-1 + ATANH_EPS, 1 - ATANH_EPS))
        return ((torch.tanh(pre) + 1) / 2).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------- discriminator


class Discriminator(nn.Module):
    """Spectral-norm PatchGAN: stride-2 convs down to about 4-7 pixels, then a 3x3 conv to C label
    outputs + 1 real/fake output, averaged over positions (so any image size works)."""

    def __init__(self, image_size: int, num_classes: int, width: int):
        super().__init__()
        depth = min(5, max(1, int(math.log2(image_size)) - 2))  # 224 -> 5 (7x7), 32 -> 3 (4x4)
        layers: list[nn.Module] = []
        c_in, c = 3, width
        for _ in range(depth):
            layers += [spectral_norm(nn.Conv2d(c_in, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.01)]
            c_in, c = c, 2 * c
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, num_classes + 1, 3, padding=1, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> (n, C + 1): label scores, then the real/fake score."""
        return self.head(self.body(images * 2 - 1)).mean(dim=(2, 3))


def lsgan_loss(scores: torch.Tensor, labels: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss against [label vector, 1 for real / 0 for fake]."""
    flag = torch.full((len(labels), 1), 1.0 if real else 0.0, device=labels.device, dtype=labels.dtype)
    return F.mse_loss(scores.float(), torch.cat([labels, flag], 1))


# --------------------------------------------------------------------------------------------- SSIM


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """1 - mean SSIM with scikit-image's defaults (uniform 7x7 window, sample covariance, data range
    1), differentiable: the loss matches the reported ``poison_ssim`` metric."""
    window = min(window, *x.shape[-2:])
    window -= 1 - window % 2  # odd, like scikit-image's windows
    c1, c2 = 0.01**2, 0.03**2
    n = window * window
    pool = partial(F.avg_pool2d, kernel_size=window, stride=1)
    mx, my = pool(x), pool(y)
    cov_norm = n / (n - 1)
    vx = cov_norm * (pool(x * x) - mx * mx)
    vy = cov_norm * (pool(y * y) - my * my)
    vxy = cov_norm * (pool(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1.0 - s.mean()
