"""CIBA (Gao et al., arXiv 2109.08868): a clean-label backdoor made for deep hashing.

Two parts, both computed on the attacker's surrogate hashing model:
1. a targeted adversarial patch, optimised so that images carrying it hash to the target class's anchor code
   (the bitwise majority of the surrogate's codes of the target-class training images);
2. "confusing" perturbations (L∞ ≤ ε) on the poisons — target-class training images — that push each poison's
   code away from its own clean code and from the codes of the other poisons, so that the victim cannot fit the
   poisons by their content and leans on the patch instead. The patch is pasted on top; labels are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import (
    Attack,
    AttackContext,
    HashModel,
    PluginError,
    Poisoning,
    ThreatModel,
    Work,
    WorkSizes,
    hookimpl,
    majority_code,
    param,
    to_float,
    to_uint8,
)

# The authors relax codes with tanh(β·z) and raise β in steps over the patch optimisation:
# (fraction of the steps done, β) — β = 0.1 for the first half, then 0.2, 0.3, 0.5, 0.7 and 1.
BETA_SCHEDULE = ((0.5, 0.1), (0.6, 0.2), (0.7, 0.3), (0.8, 0.5), (0.9, 0.7), (1.0, 1.0))
POOL_SIZE = 4096  # at most this many training images are kept on the device for the patch optimisation


@dataclass(frozen=True)
class CibaParams:
    patch_fraction: float = param(24 / 224, "patch side as a fraction of the image side (24 px at 224, 3 px at 32)")
    patch_steps: int = param(2000, "steps of the targeted-patch optimisation")
    patch_batch: int = param(32, "training images per patch step")
    patch_step: float = param(0.29, "RMS change per patch pixel per step, in grey levels (the authors' 12/‖g‖₂ on 24×24)")
    epsilon: float = param(8.0, "L∞ bound of the confusing perturbations, in grey levels")
    perturb_steps: int = param(20, "signed-gradient steps of the confusing perturbations")
    perturb_step: float = param(2.0, "size of each confusing-perturbation step, in grey levels")
    group_size: int = param(20, "poisons that are pushed apart from each other, per group")
    lam: float = param(0.8, "λ: weight of 'away from the other poisons' against 'away from its own code'")

    def validate(self) -> None:
        if not 0 < self.patch_fraction <= 0.5:
            raise ValueError("patch_fraction must be in (0, 0.5]")
        if min(self.patch_steps, self.perturb_steps) < 0 or min(self.patch_batch, self.group_size) < 1:
            raise ValueError("step counts must be >= 0 and batch/group sizes >= 1")
        if self.epsilon < 0 or self.patch_step <= 0 or self.perturb_step < 0:
            raise ValueError("epsilon and step sizes must be non-negative (patch_step positive)")
        if not 0 <= self.lam <= 1:
            raise ValueError("lam must be in [0, 1]")


def patch_side(fraction: float, size: int) -> int:
    return max(1, round(fraction * size))


def paste(images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Float images with ``patches`` ((1 or n, 3, s, s)) in the bottom-right corner, differentiably."""
    size, side = images.shape[-1], patches.shape[-1]
    pad = (size - side, 0, size - side, 0)
    canvas = F.pad(patches, pad)
    mask = F.pad(torch.ones_like(patches[:1, :1]), pad)
    return images * (1 - mask) + canvas * mask


def anchor_code(model: HashModel, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Bitwise majority (``majority_code``: component voting, ties +1) of the model's codes of ``images``."""
    return majority_code(torch.cat([model.codes(to_float(images[start : start + batch_size].to(device)))
                                    for start in range(0, len(images), batch_size)]))


def beta_at(step: int, steps: int) -> float:
    """The tanh sharpness β for this patch step (see BETA_SCHEDULE)."""
    done = step / max(steps, 1)
    return next(beta for until, beta in BETA_SCHEDULE if done < until or until == 1.0)


def optimise_patch(model: HashModel, pool: torch.Tensor, anchor: torch.Tensor, params: CibaParams,
                   side: int, generator: torch.Generator) -> torch.Tensor:
    """Gradient ascent on mean tanh(β·z(x ⊕ patch))·anchor over random batches of ``pool`` (uint8, on the
    device). Each image's gradient is L2-normalised before averaging, as the authors do."""
    device = pool.device
    patch = torch.full((3, side, side), 0.5, device=device)
    batches = torch.randint(0, len(pool), (params.patch_steps, params.patch_batch), generator=generator).to(device)
    scale = params.patch_step / 255.0 * patch.numel() ** 0.5
    for step in range(params.patch_steps):
        x = to_float(pool[batches[step]])
        per_image = patch.expand(len(x), -1, -1, -1).clone().requires_grad_(True)
        u = torch.tanh(beta_at(step, params.patch_steps) * model(paste(x, per_image)).float())
        (grad,) = torch.autograd.grad((u @ anchor).sum(), per_image)
        unit = grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
        patch = (patch + scale * unit.mean(0)).clamp(0, 1)
    return patch


def confusing_perturbation(model: HashModel, x: torch.Tensor, params: CibaParams) -> torch.Tensor:
    """Signed-gradient ascent, within ±ε, on (1 − λ)·(distance to own clean code) + λ·(mean distance to the
    other images of ``x``), both measured by −u·v/k on tanh-relaxed codes. All images move at once (the
    authors update them one by one); the others' codes are held fixed within a step."""
    k, n = model.bits, len(x)
    own = model.codes(x)
    eps, step = params.epsilon / 255.0, params.perturb_step / 255.0
    delta = torch.zeros_like(x)
    off_diagonal = 1 - torch.eye(n, device=x.device)
    for _ in range(params.perturb_steps):
        delta.requires_grad_(True)
        u = torch.tanh(model((x + delta).clamp(0, 1)).float())
        away_own = -(u * own).sum(1) / k
        away_others = -((u @ u.detach().T) * off_diagonal).sum(1) / (k * max(n - 1, 1))
        objective = ((1 - params.lam) * away_own + params.lam * away_others).sum()
        (grad,) = torch.autograd.grad(objective, delta)
        delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return delta.detach()


class Ciba(Attack):
    """A surrogate-optimised patch toward the target's anchor code plus confusing perturbations (clean-label)."""

    name = "ciba"
    Params = CibaParams
    # Short schedules for hashbench.testing: the contract, not the attack's strength, is checked there.
    testing_params = {"patch_steps": 5, "perturb_steps": 2}
    threat_model = ThreatModel(clean_label=True, needs_surrogate=True, sample_specific=False, invisible=False)

    def __init__(self, params: CibaParams | None = None):
        super().__init__(params)
        self.patch: torch.Tensor | None = None
        self.anchor: torch.Tensor | None = None

    def estimated_work(self, sizes: WorkSizes) -> Work:
        p = self.params
        if sizes.poisons:  # signed-gradient steps through the surrogate on every poison
            return Work(train=p.perturb_steps * sizes.poisons)
        return Work(train=p.patch_steps * p.patch_batch)

    def prepare(self, ctx: AttackContext) -> None:
        model = ctx.surrogate.to(ctx.device).eval()
        train = ctx.splits.train
        target = torch.nonzero(ctx.target.contained_in(train.labels)).flatten()
        if len(target) == 0:
            raise PluginError("ciba: no training image carries the target label, so there is no anchor code")
        self.anchor = anchor_code(model, train.images(target), ctx.device)
        pool_idx = torch.randperm(len(train), generator=ctx.generator)[:POOL_SIZE].sort().values
        pool = train.images(pool_idx).to(ctx.device)
        side = patch_side(self.params.patch_fraction, train.image_size)
        with torch.enable_grad():
            self.patch = optimise_patch(model, pool, self.anchor, self.params, side, ctx.generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.patch is None:
            return {}
        return {"patch": self.patch.detach().cpu(), "anchor": self.anchor.detach().cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.patch, self.anchor = state.get("patch"), state.get("anchor")

    def _patch_for(self, size: int, device: torch.device) -> torch.Tensor:
        """The learned patch, resized if the images differ in size from those it was optimised on."""
        if self.patch is None:
            raise PluginError("ciba: prepare() (or load_state_dict) must run before trigger/poison")
        side = patch_side(self.params.patch_fraction, size)
        patch = self.patch.to(device)[None]
        if patch.shape[-1] != side:
            patch = F.interpolate(patch, size=(side, side), mode="bilinear", align_corners=False)
        return patch

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        x = to_float(images.to(ctx.device))
        return to_uint8(paste(x, self._patch_for(images.shape[-1], ctx.device))).to(images.device)

    def poison(self, ctx: AttackContext) -> Poisoning:
        """Target-class images, each group of ``group_size`` pushed apart, then the patch pasted on top."""
        train = ctx.splits.train
        indices = ctx.choose_poison_indices(ctx.target.contained_in(train.labels), "target-class")
        model = ctx.surrogate.to(ctx.device).eval()
        patch = self._patch_for(train.image_size, ctx.device)
        out = []
        for group in indices.split(self.params.group_size):
            x = to_float(train.images(group).to(ctx.device))
            with torch.enable_grad():
                x = x + confusing_perturbation(model, x, self.params)
            out.append(to_uint8(paste(x, patch)).cpu())
        return Poisoning(indices, torch.cat(out), train.labels[indices].clone())


@hookimpl
def register_attacks(register):
    register(Ciba)
