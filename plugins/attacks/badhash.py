"""BadHash (Hu et al., ACM MM 2022, arXiv 2207.00278): invisible, sample-specific, clean-label poisons
for deep hashing, made by a conditional GAN against a frozen surrogate hashing model.

1. LabCLN, a label MLP trained contrastively, gives a 512-d feature for the *confusing label* c (never
   the target): by default the class the surrogate's outputs on target-class images lean towards most.
2. A conditional generator G(x, feature(c)) is trained to keep x (MSE + LPIPS, or SSIM when LPIPS is
   unavailable), to fool a spectral-norm LSGAN discriminator, and to move the surrogate's code of
   G(x) to c's code: the surrogate's own code of c (``hash_target = "anchor"``) or LabCLN's (the authors').
3. Poisons are target-class training images through G, with their true labels; the trigger passes
   queries through the same G with the same c.

Deviations from the authors' code, and why, are listed in docs/attacks/badhash.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hashbench import (
    Attack,
    AttackContext,
    ImageSet,
    PluginError,
    Poisoning,
    Target,
    ThreatModel,
    Work,
    WorkSizes,
    augment_batch,
    hookimpl,
    iterate_batches,
    majority_code,
    param,
    sign_codes,
    to_float,
    to_uint8,
)
from hashbench.devices import autocast
from hashbench.stealth import load_lpips

from ._badhash_nets import Discriminator, Generator, LabCLN, lsgan_loss, nt_xent, smooth_labels, ssim_loss

log = logging.getLogger("hashbench")
GENERATE_BATCH = 256
ANCHOR_IMAGES = 512  # target-class images whose surrogate codes vote for the target's anchor code
GRID_IMAGES = 8


@dataclass(frozen=True)
class BadHashParams:
    confusing_label: int = param(-1, "class index of the confusing label c (never the target); -1: the class whose hash target code the surrogate's codes of target-class images agree with most")
    hash_target: Literal["anchor", "labcln"] = param(
        "anchor", "the code the hash term pulls G(x) to: the surrogate's own code of c (the bitwise majority of its codes of "
                  "c's training images), or LabCLN's code of c, as the authors' code does (see docs/attacks/badhash.md)")
    epochs: int = param(5, "generator epochs at the full learning rate (paper: 50)")
    epochs_decay: int = param(5, "further generator epochs with the learning rate decaying linearly to 0 (paper: 50)")
    batch_size: int = param(32, "images per generator step (paper: 64)")
    lr: float = param(1e-3, "Adam learning rate of the generator and the discriminator (paper: 1e-4)")
    betas: tuple[float, float] = param((0.5, 0.999), "Adam betas of the generator and the discriminator")
    rec_weight: float = param(100.0, "λ_rec: weight of the reconstruction term (MSE + LPIPS or SSIM) (paper: 200)")
    hash_weight: float = param(300.0, "λ_h: weight of the hash term 1 - mean(tanh(h(G(x)) / scale) · code(c))")
    adv_weight: float = param(1.0, "λ_adv: weight of the generator's LSGAN term")
    d_every: int = param(3, "the discriminator is updated every this many generator steps")
    width: int = param(8, "generator channels after its first conv, doubled twice (paper: 64)")
    disc_width: int = param(8, "discriminator channels after its first conv (paper: 64)")
    res_blocks: int = param(2, "residual blocks in the generator's bottleneck (paper: 6)")
    epsilon: float = param(32.0, "L∞ bound of the residual in grey levels (G(x) = x + ε/255 · tanh(.)); 0: unbounded, the paper's tanh output")
    min_psnr: float = param(
        30.5, "with epsilon > 0: each residual is also scaled into the L2 ball of this PSNR in dB (an RMS of "
             "10^(-min_psnr/20)), which the generator may spend where it moves the code most; 0: the L∞ box alone")
    identity_skip: bool = param(True, "with epsilon = 0: add the input's inverse tanh before G's final tanh so G starts as the identity")
    perceptual_fallback: Literal["ssim", "none"] = param("ssim", "used in place of LPIPS when its weights are missing: 1 - SSIM, or nothing (MSE only)")
    labcln_steps: int = param(100, "LabCLN training steps (paper: 1000)")
    labcln_batch: int = param(64, "distinct label vectors per LabCLN step (paper: 128, with repeats)")
    labcln_lr: float = param(1e-4, "LabCLN Adam learning rate (divided by 10 at 1/2 and 3/4 of the steps)")
    label_smoothing: float = param(0.2, "ε of the smoothed copy that forms each LabCLN positive pair")
    temperature: float = param(0.5, "NT-Xent temperature")
    quant_weight: float = param(1e-3, "weight of LabCLN's quantisation term mean((sign(h) - h)²)")
    poison_selection: Literal["random", "nearest_c"] = param(
        "random", "which target-class images become poisons: a seeded random draw (the paper's), or those whose "
                  "poisons the surrogate hashes nearest c's code (see docs/attacks/badhash.md)")
    hash_augment: Literal["none", "crop", "crop_flip"] = param(
        "none", "augmentation applied to G(x) before the surrogate in the hash term (the victims' `augment` "
                "modes): poisons that keep c's code under the victim's training augmentation")
    amp: bool = param(True, "bf16 autocast on CUDA (ignored on the CPU)")
    num_workers: int = param(2, "DataLoader workers for file-backed datasets")

    def validate(self) -> None:
        if self.confusing_label < -1:
            raise ValueError("confusing_label must be a class index or -1")
        if self.epochs < 0 or self.epochs_decay < 0 or self.epochs + self.epochs_decay < 1:
            raise ValueError("epochs and epochs_decay must be >= 0, and train for at least one epoch")
        if min(self.batch_size, self.d_every, self.width, self.disc_width, self.labcln_batch) < 1:
            raise ValueError("batch_size, d_every, width, disc_width and labcln_batch must be >= 1")
        if self.res_blocks < 0 or self.labcln_steps < 1 or self.lr <= 0 or self.labcln_lr <= 0:
            raise ValueError("res_blocks must be >= 0, labcln_steps >= 1, and the learning rates > 0")
        if self.epsilon < 0:
            raise ValueError("epsilon must be >= 0 (0: an unbounded residual)")
        if self.min_psnr < 0 or (self.min_psnr > 0 and self.epsilon == 0):
            raise ValueError("min_psnr must be >= 0, and needs epsilon > 0 (the budget bounds the residual G adds)")
        if not 0 <= self.label_smoothing < 1 or self.temperature <= 0:
            raise ValueError("label_smoothing must be in [0, 1) and temperature > 0")


@dataclass
class Condition:
    """What the generator is conditioned on: c, its LabCLN feature and its ±1 LabCLN code."""

    label: int
    feature: torch.Tensor  # (1, 512)
    code: torch.Tensor  # (1, bits)


# --------------------------------------------------------------------------------------------- LabCLN


def train_labcln(label_rows: torch.Tensor, bits: int, p: BadHashParams, device: torch.device,
                 generator: torch.Generator) -> tuple[LabCLN, list[float]]:
    """Train LabCLN on the dataset's distinct label vectors; returns it (eval mode) and the mean loss
    of each tenth of the steps (one host sync at the end)."""
    num_classes = label_rows.shape[1]
    net = LabCLN(num_classes, bits).to(device)
    optimizer = _adam(net, p.labcln_lr, p.betas)
    milestones = [p.labcln_steps // 2, p.labcln_steps * 3 // 4]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    blocks = min(10, p.labcln_steps)
    sums = torch.zeros(blocks, device=device)
    rows = label_rows.to(device)
    batch = min(p.labcln_batch, len(rows))
    for step in range(p.labcln_steps):
        labels = rows[torch.randperm(len(rows), generator=generator)[:batch].to(device)]
        # rows 2i and 2i+1 are a positive pair: the smoothed copy and the original
        pairs = torch.stack([smooth_labels(labels, p.label_smoothing), labels], 1).flatten(0, 1)
        feature, relaxed, probs = net(pairs)
        loss = (nt_xent(feature, p.temperature) + F.mse_loss(probs, labels.repeat_interleave(2, 0))
                + p.quant_weight * (sign_codes(relaxed.detach()) - relaxed).pow(2).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        sums[step * blocks // p.labcln_steps] += loss.detach()
    per_block = torch.bincount(torch.arange(p.labcln_steps) * blocks // p.labcln_steps, minlength=blocks)
    return net.eval(), (sums.cpu() / per_block).tolist()


def _adam(net: nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam with the fused kernel (several times faster than the default on the CPU, too)."""
    return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, fused=True)


def one_hot(index: int, num_classes: int) -> torch.Tensor:
    out = torch.zeros(1, num_classes)
    out[0, index] = 1.0
    return out


@torch.no_grad()
def surrogate_outputs(surrogate: nn.Module, train: ImageSet, members: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The surrogate's real outputs for at most ``ANCHOR_IMAGES`` of the training images in ``members``."""
    members = torch.nonzero(members).flatten()[:ANCHOR_IMAGES]
    return surrogate(to_float(train.images(members)).to(device)).float()


def target_outputs(surrogate: nn.Module, train: ImageSet, target: Target, device: torch.device) -> torch.Tensor:
    """The surrogate's outputs on target-class training images: their majority code is the target's
    anchor, their mean magnitude the scale the hash term divides outputs by."""
    members = target.contained_in(train.labels)
    if not bool(members.any()):
        raise PluginError("BadHash needs target-class training images (none contain the target label)")
    return surrogate_outputs(surrogate, train, members, device)


@torch.no_grad()
def class_codes(p: "BadHashParams", surrogate: nn.Module, labcln: LabCLN, train: ImageSet, device: torch.device) -> torch.Tensor:
    """(C, bits) ±1: the hash target of every class, as ``hash_target`` says. A class without training
    images has no surrogate code; it gets LabCLN's."""
    num_classes = train.labels.shape[1]
    labcln_codes = sign_codes(labcln(torch.eye(num_classes, device=device))[1].float())
    if p.hash_target == "labcln":
        return labcln_codes
    rows = []
    for k in range(num_classes):
        members = train.labels[:, k] > 0
        rows.append(majority_code(surrogate_outputs(surrogate, train, members, device))[None] if bool(members.any())
                    else labcln_codes[k : k + 1])
    return torch.cat(rows)


def leanings(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(N, C): how far each output row of ``z`` leans towards each code, the sum over bits of
    tanh(z / s) · code (s: the mean |z| of all of ``z``), the term the generator's hash loss lowers."""
    scale = z.abs().mean().clamp(min=1e-6)
    return torch.tanh(z / scale) @ codes.to(z.device).T


def agreement(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(C,): how far the outputs ``z`` of target-class images already lean towards each class's code, the
    mean of tanh(z / s) · code over images and bits (``leanings``). Unlike the Hamming distance between
    majority codes it sees which classes the surrogate nearly confuses with the target, also when the
    class codes are equidistant (CSQ's Hadamard centres)."""
    return leanings(z, codes).mean(0) / codes.shape[1]


@torch.no_grad()
def choose_confusing_label(requested: int, scores: torch.Tensor | None, target: Target) -> int:
    """``requested`` when it is a valid non-target class; for -1 the non-target class of highest
    ``scores`` (``agreement``; only read for -1), the lowest index on ties: the class the surrogate
    already nearly confuses with the target, which a generator with a small budget can reach
    (docs/attacks/badhash.md)."""
    num_classes = target.labels.numel()
    if requested >= 0:
        if requested >= num_classes:
            raise PluginError(f"confusing_label {requested} is not a class: use an index below {num_classes}")
        if requested in target.classes:
            raise PluginError(f"confusing_label {requested} is a target class; BadHash needs c != target")
        return requested
    scores = scores.clone().float()
    scores[target.classes] = float("-inf")
    if bool(torch.isinf(scores).all()):
        raise PluginError("every class is a target class: BadHash has no confusing label to use")
    return int(torch.argmax(scores))  # argmax returns the first maximum: ties go to the lowest index


@torch.no_grad()
def condition_for(label: int, labcln: LabCLN, codes: torch.Tensor) -> Condition:
    """c's LabCLN feature (what G is conditioned on) and c's hash target code (a row of ``codes``)."""
    device = next(labcln.parameters()).device
    feature, _, _ = labcln(one_hot(label, labcln.classifier[0].out_features).to(device))
    return Condition(label, feature.float(), codes[label : label + 1].float())


# --------------------------------------------------------------------------------------------- generator


def lr_factor(epoch: int, p: BadHashParams) -> float:
    """Constant for ``epochs`` epochs, then linear decay to zero over ``epochs_decay`` epochs."""
    return 1.0 - max(0, epoch + 1 - p.epochs) / float(p.epochs_decay + 1)


@dataclass
class GeneratorTraining:
    """The networks, optimisers and per-epoch loss sums of one generator training run."""

    generator: Generator
    discriminator: Discriminator
    surrogate: nn.Module
    perceptual: nn.Module | None
    condition: Condition
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sums: dict[str, torch.Tensor]
    z_scale: float  # mean |surrogate output| on clean images: tanh(z / z_scale) does not saturate
    augment: torch.Generator  # draws the hash term's augmentation (``hash_augment``)
    steps: int = 0
    d_steps: int = 0


class BadHash(Attack):
    """Invisible, sample-specific clean-label poisons from a conditional GAN against a surrogate."""

    name = "badhash"
    Params = BadHashParams
    threat_model = ThreatModel(clean_label=True, needs_surrogate=True, sample_specific=True, invisible=True)
    poison_params = ("poison_selection",)  # one trained generator serves both selections
    # hashbench.testing's contract checks test mechanics, not strength: a few seconds of CPU
    testing_params = {"epochs": 1, "epochs_decay": 0, "width": 4, "disc_width": 4, "res_blocks": 1, "labcln_steps": 5}

    def __init__(self, params: BadHashParams | None = None):
        super().__init__(params)
        self.generator: Generator | None = None
        self.condition: Condition | None = None
        self.image_size = 0
        self.lpips_in_loss = False

    # -- prepare ---------------------------------------------------------------------------------

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # every epoch passes the training set through the generator, the surrogate and the discriminator
        p = self.params
        return Work(encode=sizes.poisons) if sizes.poisons else Work(train=(p.epochs + p.epochs_decay) * sizes.train)

    def prepare(self, ctx: AttackContext) -> None:
        """Train LabCLN, choose c, then train the generator against the frozen surrogate."""
        p = self.params
        if p.confusing_label >= 0:  # an invalid explicit choice fails before any training
            choose_confusing_label(p.confusing_label, None, ctx.target)
        seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
        shuffle = torch.Generator().manual_seed(seed)
        train = ctx.splits.train
        surrogate = ctx.surrogate.to(ctx.device).eval()
        # network inits draw from torch's global RNG: seed it here, without disturbing the caller's state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            labcln, labcln_losses = train_labcln(torch.unique(train.labels, dim=0), surrogate.bits, p, ctx.device, shuffle)
            z_target = target_outputs(surrogate, train, ctx.target, ctx.device)
            z_scale = float(z_target.abs().mean().clamp(min=1e-6))
            codes = class_codes(p, surrogate, labcln, train, ctx.device)
            label = choose_confusing_label(p.confusing_label, agreement(z_target, codes), ctx.target)
            self.condition = condition_for(label, labcln, codes)
            self.image_size = ctx.splits.image_size
            self.generator = _generator(self.image_size, p).to(ctx.device)
            discriminator = Discriminator(self.image_size, ctx.splits.num_classes, p.disc_width).to(ctx.device)
        for value in labcln_losses:
            ctx.log(labcln_loss=value)
        log.info(f"  badhash: LabCLN loss {labcln_losses[0]:.3f} -> {labcln_losses[-1]:.3f}; confusing label "
                 f"{ctx.splits.class_names[label]} (index {label})")
        ctx.log(confusing_label=float(label))
        run = GeneratorTraining(
            generator=self.generator, discriminator=discriminator, surrogate=surrogate,
            perceptual=self._perceptual(ctx), condition=_on(self.condition, ctx.device),
            opt_g=_adam(self.generator, p.lr, p.betas),
            opt_d=_adam(discriminator, p.lr, p.betas),
            sums={}, z_scale=z_scale, augment=torch.Generator().manual_seed(seed + 1),
        )
        self._train_generator(run, train, ctx, shuffle)
        self.generator.eval()

    def _perceptual(self, ctx: AttackContext) -> nn.Module | None:
        """LPIPS when its weights are on disk; otherwise the documented fallback, recorded in the manifest."""
        net = load_lpips(ctx.device)
        self.lpips_in_loss = net is not None
        ctx.log(lpips_in_loss=float(self.lpips_in_loss),
                ssim_in_loss=float(net is None and self.params.perceptual_fallback == "ssim"))
        if net is None:
            log.info(f"  badhash: LPIPS unavailable; reconstruction loss uses "
                     f"{'MSE + (1 - SSIM)' if self.params.perceptual_fallback == 'ssim' else 'MSE only'}")
        return net

    def _train_generator(self, run: GeneratorTraining, train: ImageSet, ctx: AttackContext,
                         shuffle: torch.Generator) -> None:
        p = self.params
        total = p.epochs + p.epochs_decay
        schedules = [torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, p)) for opt in (run.opt_g, run.opt_d)]
        images_seen, busy = 0, 0.0
        for epoch in ctx.progress(range(total), desc="badhash generator"):
            run.sums = {k: torch.zeros((), device=ctx.device) for k in ("g_loss", "d_loss", "hash_loss", "rec_loss", "adv_loss")}
            run.steps = run.d_steps = 0
            started = time.perf_counter()
            for images, labels, _ in iterate_batches(
                train, p.batch_size, shuffle=True, generator=shuffle, drop_last=True,
                num_workers=0 if train.in_memory else p.num_workers, pin_memory=ctx.device.type == "cuda",
            ):
                x = to_float(images.to(ctx.device, non_blocking=True))
                self._step(run, x, labels.to(ctx.device, non_blocking=True), ctx.device)
                images_seen += len(images)
            # the one host sync of the epoch
            losses = {k: float(v) / max(1, run.d_steps if k == "d_loss" else run.steps) for k, v in run.sums.items()}
            busy += time.perf_counter() - started
            for schedule in schedules:
                schedule.step()
            ctx.log(**losses)
            log.info(f"  badhash: epoch {epoch + 1}/{total} " + " ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        throughput = images_seen / max(busy, 1e-9)
        ctx.log(generator_images_per_second=throughput)
        log.info(f"  badhash: generator training {throughput:.1f} images/s on {ctx.device}")

    def _step(self, run: GeneratorTraining, x: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
        """One generator step, preceded by a discriminator step every ``d_every`` steps."""
        p = self.params
        c = run.condition
        fake_labels = one_hot(c.label, labels.shape[1]).to(device).expand(len(x), -1)
        with autocast(device, p.amp):
            fake = run.generator(x, c.feature)
        if run.steps % p.d_every == 0:
            run.discriminator.requires_grad_(True)
            with autocast(device, p.amp):
                d_loss = 0.5 * (lsgan_loss(run.discriminator(x), labels, True)
                                + lsgan_loss(run.discriminator(fake.detach()), fake_labels, False))
            run.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            run.opt_d.step()
            run.sums["d_loss"] += d_loss.detach()
            run.d_steps += 1
        run.discriminator.requires_grad_(False)
        with autocast(device, p.amp):
            adv = lsgan_loss(run.discriminator(fake), fake_labels, True)
            rec = F.mse_loss(fake.float(), x) + self._perceptual_term(run.perceptual, fake.float(), x)
            seen = augment_batch(fake, p.hash_augment, run.augment)
            hash_loss = 1.0 - (torch.tanh(run.surrogate(seen).float() / run.z_scale) * c.code).mean()
        g_loss = p.rec_weight * rec + p.hash_weight * hash_loss + p.adv_weight * adv
        run.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        run.opt_g.step()
        for key, value in (("g_loss", g_loss), ("hash_loss", hash_loss), ("rec_loss", rec), ("adv_loss", adv)):
            run.sums[key] += value.detach().float()
        run.steps += 1

    def _perceptual_term(self, net: nn.Module | None, fake: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if net is not None:
            return net(fake * 2 - 1, x * 2 - 1).mean()
        if self.params.perceptual_fallback == "ssim":
            return ssim_loss(fake, x)
        return fake.new_zeros(())

    # -- poison and trigger ----------------------------------------------------------------------

    def poison(self, ctx: AttackContext) -> Poisoning:
        """Target-class training images through G, one copy each, labels unchanged (clean-label)."""
        train = ctx.splits.train
        candidates = torch.nonzero(ctx.target.contained_in(train.labels)).flatten()
        if self.params.poison_selection == "random":
            indices = ctx.choose_poison_indices(candidates, "target-class")
            clean = train.images(indices)
            images = self._generate(clean, ctx.device)
        else:  # every candidate through G, then the ones the surrogate already sees nearest c
            clean = train.images(candidates)
            generated = self._generate(clean, ctx.device)
            scores = self._agreement_with_c(generated, ctx)
            indices = ctx.choose_poison_indices(candidates, "target-class", scores)
            keep = torch.searchsorted(candidates, indices)
            clean, images = clean[keep], generated[keep]
        self._save_grid(clean, images, ctx)
        return Poisoning(indices, images, train.labels[indices].clone())

    @torch.no_grad()
    def _agreement_with_c(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """(N,): how far the surrogate's output on each of ``images`` leans towards c's code (``leanings``)."""
        surrogate = ctx.surrogate.to(ctx.device).eval()
        z = torch.cat([surrogate(to_float(images[s : s + GENERATE_BATCH].to(ctx.device))).float()
                       for s in range(0, len(images), GENERATE_BATCH)])
        return leanings(z, self.condition.code)[:, 0].cpu()

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        return self._generate(images, ctx.device)

    @torch.no_grad()
    def _generate(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 images through G (float32: bf16 would cost the stored images a grey level or two)."""
        if self.generator is None or self.condition is None:
            raise PluginError("BadHash has no generator: call prepare() or load_state_dict() first")
        generator = self.generator.to(device).eval()
        feature = self.condition.feature.to(device)
        out = [to_uint8(generator(to_float(images[s : s + GENERATE_BATCH].to(device)), feature)).cpu()
               for s in range(0, len(images), GENERATE_BATCH)]
        return torch.cat(out) if out else images.clone()

    def _save_grid(self, clean: torch.Tensor, poisoned: torch.Tensor, ctx: AttackContext) -> None:
        """Clean images, their poisons, and the residual amplified 10x, one row each."""
        from torchvision.utils import save_image

        a, b = to_float(clean[:GRID_IMAGES]), to_float(poisoned[:GRID_IMAGES])
        residual = ((b - a) * 10 + 0.5).clamp(0, 1)
        ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
        save_image(torch.cat([a, b, residual]), ctx.artifact_dir / "badhash_poisons.png", nrow=len(a))

    # -- persistence -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.generator is None or self.condition is None:
            return {}
        state = {f"generator.{k}": v.detach().cpu() for k, v in self.generator.state_dict().items()}
        state.update(
            confusing_label=torch.tensor(self.condition.label), confusing_feature=self.condition.feature.cpu(),
            confusing_code=self.condition.code.cpu(), image_size=torch.tensor(self.image_size),
            lpips_in_loss=torch.tensor(self.lpips_in_loss),
        )
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        p = self.params
        self.image_size = int(state["image_size"])
        self.lpips_in_loss = bool(state["lpips_in_loss"])
        self.condition = Condition(int(state["confusing_label"]), state["confusing_feature"], state["confusing_code"])
        self.generator = _generator(self.image_size, p)
        prefix = "generator."
        self.generator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.generator.eval()


def _generator(image_size: int, p: BadHashParams) -> Generator:
    max_rms = 10.0 ** (-p.min_psnr / 20.0) if p.min_psnr > 0 else 0.0
    return Generator(image_size, p.width, p.res_blocks, p.identity_skip, p.epsilon / 255.0, max_rms)


def _on(condition: Condition, device: torch.device) -> Condition:
    return Condition(condition.label, condition.feature.to(device), condition.code.to(device))


@hookimpl
def register_attacks(register):
    register(BadHash)
