"""Neural Cleanse (Wang et al., S&P 2019) for hashing: for each candidate label, reverse-engineer the
smallest mask + pattern that makes clean images of other labels hash nearest to that label's anchor code
(the bitwise majority of the codes of the defender's clean images with that label) *and* within
``radius`` bits of it (the Hamming ball a hash lookup would retrieve from). A backdoor target
needs a much smaller mask than the other labels, which the MAD anomaly index exposes. Flagged labels are
unlearned by fine-tuning on clean images stamped with their reversed trigger, keeping their true labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import DefenseContext, ModelRepair, RepairResult, TensorImageSet, Work, WorkSizes, hookimpl, param, sign_codes, to_float, to_uint8

from ._common import anchor_codes, final_loss, frozen

MAD_CONSISTENCY = 1.4826  # makes the median absolute deviation estimate a normal distribution's sigma


@dataclass(frozen=True)
class NeuralCleanseParams:
    max_labels: int = param(10, "candidate labels reversed, drawn in a seeded random order from those in the clean subset (bounds the cost)")
    steps: int = param(150, "optimisation steps per candidate label")
    batch_size: int = param(16, "clean images per optimisation step")
    lr: float = param(0.1, "Adam learning rate of the mask and pattern logits")
    lambda_l1: float = param(0.5, "initial weight of the mask's mean value; x1.5 while the attack succeeds, /1.5 otherwise")
    success: float = param(0.9, "share of stamped images that must hash nearest to the anchor for a mask to count")
    radius: int = param(2, "stamped codes must also lie within this Hamming distance of the anchor (-1: nearest only)")
    temperature: float = param(8.0, "scale of the code-to-anchor similarities in the cross-entropy")
    threshold: float = param(2.0, "anomaly index above which a label (with a small mask) is flagged")
    unlearn_fraction: float = param(0.2, "share of clean images stamped with a flagged label's reversed trigger")
    unlearn_epochs: int = param(10, "fine-tuning passes for unlearning (only when a label is flagged)")
    unlearn_lr: float = param(1e-3, "learning rate of the unlearning fine-tune")

    def validate(self) -> None:
        if self.max_labels < 2 or self.steps < 1 or self.batch_size < 1 or self.unlearn_epochs < 0:
            raise ValueError("max_labels must be >= 2, steps and batch_size >= 1, unlearn_epochs >= 0")
        if self.lr <= 0 or self.lambda_l1 < 0 or not 0 < self.unlearn_fraction <= 1:
            raise ValueError("lr must be > 0, lambda_l1 >= 0 and unlearn_fraction in (0, 1]")
        if not 0 < self.success <= 1 or self.temperature <= 0 or self.radius < -1:
            raise ValueError("success must be in (0, 1], temperature > 0 and radius >= -1")


@dataclass
class ReversedTrigger:
    label: int
    mask: torch.Tensor  # (1, H, W) in [0, 1]
    pattern: torch.Tensor  # (3, H, W) in [0, 1]

    @property
    def l1(self) -> float:
        return float(self.mask.detach().sum())

    def stamp(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] with the trigger applied: (1 − m)·x + m·p."""
        return (1 - self.mask) * images + self.mask * self.pattern


class NeuralCleanse(ModelRepair):
    """Reverse a trigger per label toward its anchor code; flag small-mask outliers (MAD); unlearn them."""

    name = "neural_cleanse"
    version = "2"  # 2: NumPy's median (mean of the middle two), as NC's code; was torch's lower median
    Params = NeuralCleanseParams
    testing_slow = "reverses a trigger per candidate label by optimisation, then unlearns: minutes on a CPU"

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # a trigger reversed per examined label (at most max_labels), then unlearning on the clean set
        p = self.params
        return Work(train=p.max_labels * p.steps * p.batch_size + p.unlearn_epochs * sizes.clean)

    def repair(self, ctx: DefenseContext) -> RepairResult:
        anchors = anchor_codes(ctx.model, ctx.clean_set, ctx.device)
        labels = candidate_labels(ctx.clean_set.labels, self.params.max_labels, ctx.generator)
        triggers = [self.reverse(ctx, label, anchors) for label in labels]
        norms = torch.tensor([t.l1 for t in triggers])
        index = anomaly_index(norms)
        scores = {t.label: a for t, a in zip(triggers, index.tolist())}
        flagged = [t for t in triggers if scores[t.label] > self.params.threshold]
        report = {
            "nc_anomaly_index": float(index.max()),
            "nc_index_ceiling": index_ceiling(norms),
            "nc_flagged_count": float(len(flagged)),
            "nc_min_mask_l1": float(norms.min()),
            "nc_median_mask_l1": float(_median_and_spread(norms)[0]),
            "nc_labels_reversed": float(len(triggers)),
        }
        if flagged and self.params.unlearn_epochs > 0:
            stamped = self.stamped_clean_set(ctx, flagged)
            report |= final_loss(ctx.train(ctx.model, stamped, epochs=self.params.unlearn_epochs, lr=self.params.unlearn_lr))
        return RepairResult(ctx.model, flagged_labels=[t.label for t in flagged], report=report, label_scores=scores)

    def reverse(self, ctx: DefenseContext, label: int, anchors: torch.Tensor) -> ReversedTrigger:
        """Optimise mask and pattern logits so that stamped clean images of other labels hash nearest to
        ``anchors[label]``; keep the smallest mask that reached the success rate (NC's dynamic λ: raised
        by 1.5 while the attack succeeds over a window of 5 steps, lowered otherwise)."""
        p = self.params
        sources = ctx.clean_set.subset(torch.nonzero(ctx.clean_set.labels[:, label] == 0).flatten())
        images = to_float(sources.all_images()).to(ctx.device)
        side = images.shape[-1]
        mask_logit = torch.zeros(1, side, side, device=ctx.device, requires_grad=True)
        pattern_logit = torch.zeros(3, side, side, device=ctx.device, requires_grad=True)
        optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=p.lr)
        anchors = anchors.to(ctx.device)
        weight, window, best = p.lambda_l1, [], None
        with frozen(ctx.model) as model:
            for _ in range(p.steps):
                pick = torch.randint(len(images), (min(p.batch_size, len(images)),), generator=ctx.generator).to(ctx.device)
                trigger = ReversedTrigger(label, torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit))
                z = model(trigger.stamp(images[pick])).float()
                loss = anchor_loss(z, anchors, label, p.temperature) + weight * trigger.mask.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rate = float(reaches(z.detach(), anchors, label, p.radius).float().mean())
                if rate >= p.success and (best is None or trigger.l1 < best.l1):
                    best = ReversedTrigger(label, trigger.mask.detach().clone(), trigger.pattern.detach().clone())
                window.append(rate)
                if len(window) == 5:
                    weight = weight * 1.5 if sum(window) / 5 >= p.success else weight / 1.5
                    window = []
        # a label never reached keeps its last (large) mask: it counts as hard to reach
        return best or ReversedTrigger(label, torch.sigmoid(mask_logit).detach(), torch.sigmoid(pattern_logit).detach())

    def stamped_clean_set(self, ctx: DefenseContext, flagged: list[ReversedTrigger]) -> TensorImageSet:
        """The clean subset with ``unlearn_fraction`` of its images stamped (flagged triggers in turn), true labels kept."""
        images = to_float(ctx.clean_set.all_images())
        count = max(1, round(self.params.unlearn_fraction * len(images)))
        chosen = torch.randperm(len(images), generator=ctx.generator)[:count]
        for i, position in enumerate(chosen.tolist()):
            trigger = flagged[i % len(flagged)]
            images[position] = trigger.stamp(images[position].to(trigger.mask.device)).cpu()
        return TensorImageSet(to_uint8(images), ctx.clean_set.labels)


def candidate_labels(labels: torch.Tensor, limit: int, generator: torch.Generator) -> list[int]:
    """Up to ``limit`` labels present in the clean subset, in a seeded random order (not by frequency:
    excluding the poisons from the clean subset must not hint at the target)."""
    present = torch.nonzero(labels.sum(0) > 0).flatten()
    return sorted(present[torch.randperm(len(present), generator=generator)[:limit]].tolist())


def anchor_loss(z: torch.Tensor, anchors: torch.Tensor, label: int, temperature: float) -> torch.Tensor:
    """Cross-entropy of "nearest anchor is ``label``" over the similarities tanh(z)·anchor / bits, plus a
    per-bit logistic loss toward ``anchors[label]`` (pulls the code into the anchor's Hamming ball, not
    just across the nearest-anchor boundary)."""
    u = torch.tanh(z)
    logits = temperature * u @ anchors.t() / anchors.shape[1]
    nearest = F.cross_entropy(logits, torch.full((len(z),), label, device=z.device))
    return nearest + F.softplus(-temperature / 2 * u * anchors[label]).mean()


def nearest_is(z: torch.Tensor, anchors: torch.Tensor, label: int) -> torch.Tensor:
    """Per row: is the code of ``z`` strictly nearer (Hamming) to ``anchors[label]`` than to every other anchor?"""
    similarity = sign_codes(z) @ anchors.t()
    own = similarity[:, label].clone()
    similarity[:, label] = -float("inf")
    return own > similarity.max(1).values


def reaches(z: torch.Tensor, anchors: torch.Tensor, label: int, radius: int) -> torch.Tensor:
    """Per row: nearest to ``anchors[label]`` and (``radius`` >= 0) within ``radius`` bits of it."""
    hit = nearest_is(z, anchors, label)
    if radius >= 0:
        distance = (anchors.shape[1] - sign_codes(z) @ anchors[label]) / 2
        hit = hit & (distance <= radius)
    return hit


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """How far below the median each mask norm is, in MAD units (positive = smaller than usual)."""
    median, spread = _median_and_spread(norms)
    return (median - norms) / spread


def index_ceiling(norms: torch.Tensor) -> float:
    """The anomaly index a mask of zero pixels would get against the median and MAD of ``norms``:
    median / (1.4826 · MAD). Under the threshold, no label can be flagged however small its mask — the
    other labels' masks spread too widely — so a run that flags nothing says little about the model."""
    median, spread = _median_and_spread(norms)
    return float(median / spread)


def _median_and_spread(norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The median (the mean of the middle two for an even count, as NumPy's, which NC used — not
    ``torch.median``'s lower one) and 1.4826 · the median absolute deviation from it."""
    median = norms.float().quantile(0.5)
    return median, (MAD_CONSISTENCY * (norms - median).abs().quantile(0.5)).clamp_min(1e-12)


@hookimpl
def register_defenses(register):
    register(NeuralCleanse)
