"""ISSBA (Li et al., ICCV 2021): sample-specific, invisible triggers from a steganographic encoder (poison-label).

A small StegaStamp-like encoder/decoder pair is trained here (in ``prepare``) on the training images: the
encoder adds a residual that hides a random bit string, the decoder reads it back, and a residual penalty keeps
the change invisible. The attack then hides one fixed, seeded bit string: the encoder's residual — different
for every image — is the trigger, on the poisons (relabelled to the target) and on the queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hashbench import Attack, AttackContext, PluginError, Poisoning, ThreatModel, Work, WorkSizes, hookimpl, param, to_float, to_uint8

POOL_SIZE = 4096  # at most this many training images are kept on the device to train the encoder
SECRET_DOWNSAMPLE = 8  # the secret is spread over a map at 1/8 of the image side, then upsampled (StegaStamp)


@dataclass(frozen=True)
class IssbaParams:
    secret_bits: int = param(32, "length of the hidden bit string (StegaStamp/ISSBA use 100 at 224×224)")
    secret_seed: int = param(0, "seed of the fixed bit string used as the trigger")
    width: int = param(8, "channels of the encoder's first level (the decoder uses the same)")
    steps: int = param(400, "training steps of the encoder/decoder")
    batch_size: int = param(32, "images per training step")
    lr: float = param(2e-3, "Adam learning rate")
    residual_weight: float = param(100.0, "final weight of the residual's mean square against the bit loss (invisibility)")

    def validate(self) -> None:
        if min(self.secret_bits, self.width, self.batch_size) < 1 or self.steps < 0:
            raise ValueError("secret_bits, width and batch_size must be >= 1 and steps >= 0")
        if self.lr <= 0 or self.residual_weight < 0:
            raise ValueError("lr must be positive and residual_weight non-negative")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """(image in [0, 1], bits in {0, 1}) -> residual: a two-level U-Net on the image and a secret map, the
    bits projected to a 3-channel map at 1/8 of ``image_size`` and upsampled (as StegaStamp does)."""

    def __init__(self, bits: int, width: int, image_size: int):
        super().__init__()
        self.low = max(1, image_size // SECRET_DOWNSAMPLE)
        self.secret = nn.Linear(bits, 3 * self.low * self.low)
        self.down0 = _conv(6, width)
        self.down1 = _conv(width, 2 * width, stride=2)
        self.down2 = _conv(2 * width, 4 * width, stride=2)
        self.up1 = _conv(4 * width + 2 * width, 2 * width)
        self.up0 = _conv(2 * width + width, width)
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        secret = self.secret(bits - 0.5).view(-1, 3, self.low, self.low)
        secret = F.interpolate(secret, size=(size, size), mode="nearest")
        d0 = self.down0(torch.cat([images - 0.5, secret], dim=1))
        d1 = self.down1(d0)
        d2 = self.down2(d1)
        u1 = self.up1(torch.cat([F.interpolate(d2, size=d1.shape[-2:]), d1], dim=1))
        u0 = self.up0(torch.cat([F.interpolate(u1, size=d0.shape[-2:]), d0], dim=1))
        return self.out(u0)


class Decoder(nn.Module):
    """image -> bit logits: three stride-2 convolutions, a 4×4 pooled map, a linear layer."""

    def __init__(self, bits: int, width: int):
        super().__init__()
        self.body = nn.Sequential(_conv(3, width, 2), _conv(width, 2 * width, 2), _conv(2 * width, 4 * width, 2),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * width * 16, bits))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images - 0.5)


def fixed_secret(bits: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (bits,), generator=torch.Generator().manual_seed(seed)).float()


def residual_weight_at(step: int, params: IssbaParams) -> float:
    """0 for the first quarter (the pair first learns to communicate), then a linear ramp to the full weight
    at three quarters — StegaStamp ramps its image losses the same way; without it the encoder collapses."""
    ramp = (step / max(params.steps, 1) - 0.25) / 0.5
    return params.residual_weight * min(1.0, max(0.0, ramp))


def train_stegano(encoder: Encoder, decoder: Decoder, pool: torch.Tensor, params: IssbaParams,
                  generator: torch.Generator) -> torch.Tensor:
    """Train on random bit strings hidden in random batches of ``pool`` (uint8, on the device); return the
    final bit accuracy as a device tensor (no host sync inside the loop)."""
    device = pool.device
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=params.lr)
    batches = torch.randint(0, len(pool), (params.steps, params.batch_size), generator=generator).to(device)
    secrets = torch.randint(0, 2, (params.steps, params.batch_size, params.secret_bits), generator=generator).float().to(device)
    accuracy = torch.zeros((), device=device)
    for step in range(params.steps):
        x, bits = to_float(pool[batches[step]]), secrets[step]
        residual = encoder(x, bits)
        logits = decoder((x + residual).clamp(0, 1))
        loss = F.binary_cross_entropy_with_logits(logits, bits) + residual_weight_at(step, params) * residual.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        accuracy = ((logits.detach() > 0).float() == bits).float().mean()
    return accuracy


class Issba(Attack):
    """A trained steganographic encoder's residual (one fixed hidden bit string) as a per-image trigger."""

    name = "issba"
    Params = IssbaParams
    # Short schedules for hashbench.testing: the contract, not the attack's strength, is checked there.
    testing_params = {"steps": 10, "width": 4}
    threat_model = ThreatModel(clean_label=False, needs_surrogate=False, sample_specific=True, invisible=True)

    def __init__(self, params: IssbaParams | None = None):
        super().__init__(params)
        self.encoder: Encoder | None = None
        self.secret = fixed_secret(self.params.secret_bits, self.params.secret_seed)

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # the encoder/decoder is far smaller than a victim: counted as victim passes, an upper bound
        return Work() if sizes.poisons else Work(train=self.params.steps * self.params.batch_size)

    def prepare(self, ctx: AttackContext) -> None:
        p = self.params
        train = ctx.splits.train
        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = Encoder(p.secret_bits, p.width, train.image_size)
            decoder = Decoder(p.secret_bits, p.width)
        encoder.to(ctx.device).train()
        decoder.to(ctx.device).train()
        pool = train.images(torch.randperm(len(train), generator=ctx.generator)[:POOL_SIZE].sort().values).to(ctx.device)
        with torch.enable_grad():
            accuracy = train_stegano(encoder, decoder, pool, p, ctx.generator)
        ctx.log(issba_bit_accuracy=float(accuracy))
        self.encoder = encoder.eval().requires_grad_(False)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.encoder is None:
            return {}
        return {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        weights = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        if not weights:
            return
        low = int(round((weights["secret.weight"].shape[0] / 3) ** 0.5))
        self.encoder = Encoder(self.params.secret_bits, self.params.width, low * SECRET_DOWNSAMPLE)
        self.encoder.load_state_dict(weights)
        self.encoder.eval().requires_grad_(False)

    @torch.no_grad()
    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        if self.encoder is None:
            raise PluginError("issba: prepare() (or load_state_dict) must run before trigger/poison")
        encoder = self.encoder.to(ctx.device)
        x = to_float(images.to(ctx.device))
        bits = self.secret.to(ctx.device).expand(len(x), -1)
        return to_uint8(x + encoder(x, bits)).to(images.device)

    def poison(self, ctx: AttackContext) -> Poisoning:
        return self.relabelled_poisons(ctx)


@hookimpl
def register_attacks(register):
    register(Issba)
