"""Neural Attention Distillation (Li et al., ICLR 2021): fine-tune a teacher on the clean subset, then
train the backdoored student on the same subset with the victim's loss plus β times the distance between
the student's and the teacher's attention maps on intermediate backbone layers.

Training goes through ``ctx.train`` (the victim's own loop, objective and optimizer): the student is
wrapped in a module whose forward returns the student's real outputs unchanged but attaches the
attention term to their gradient, so the loop optimises ``victim loss + β·attention distance`` without
a second copy of the training loop. The logged epoch losses are the victim loss alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hashbench import DefenseContext, HashModel, ModelRepair, PluginError, RepairResult, Work, WorkSizes, hookimpl, param

from ._common import final_loss, frozen, modules_of, record_outputs


@dataclass(frozen=True)
class NadParams:
    teacher_epochs: int = param(10, "fine-tuning passes that make the teacher from a copy of the victim")
    epochs: int = param(10, "distillation passes over the clean subset for the student")
    lr: float = param(1e-3, "learning rate of both stages")
    beta: float = param(1000.0, "weight of the attention distance, per distilled layer")
    layers: int = param(3, "distilled layers: the backbone's last N BatchNorm2d (Conv2d when it has none)")

    def validate(self) -> None:
        if self.teacher_epochs < 1 or self.epochs < 1 or self.lr <= 0 or self.beta < 0 or self.layers < 1:
            raise ValueError("teacher_epochs, epochs and layers must be >= 1, lr > 0 and beta >= 0")


class Nad(ModelRepair):
    """Distil the attention of a clean-fine-tuned teacher into the backdoored model."""

    name = "nad"
    Params = NadParams
    # Short schedules for hashbench.testing: the contract, not the defense's strength, is checked there.
    testing_params = {"teacher_epochs": 1, "epochs": 1}

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # the teacher's fine-tuning, then the student's distillation (the teacher runs forward beside it)
        p = self.params
        return Work(train=(p.teacher_epochs + p.epochs) * sizes.clean, encode=p.epochs * sizes.clean)

    def repair(self, ctx: DefenseContext) -> RepairResult:
        p = self.params
        teacher = copy.deepcopy(ctx.model)
        ctx.train(teacher, ctx.clean_set, epochs=p.teacher_epochs, lr=p.lr)
        student_layers, teacher_layers = distilled_layers(ctx.model, p.layers), distilled_layers(teacher, p.layers)
        with frozen(teacher), record_outputs(student_layers) as student_maps, record_outputs(teacher_layers) as teacher_maps:
            wrapped = _Distilled(ctx.model, teacher, student_maps, teacher_maps, p.beta)
            report = ctx.train(wrapped, ctx.clean_set, epochs=p.epochs, lr=p.lr)
        return RepairResult(ctx.model, report=final_loss(report))


def distilled_layers(model: HashModel, count: int) -> list[nn.Module]:
    """The last ``count`` BatchNorm2d of the backbone (Conv2d for backbones without BatchNorm)."""
    layers = modules_of(model.backbone, (nn.BatchNorm2d,)) or modules_of(model.backbone, (nn.Conv2d,))
    if not layers:
        raise PluginError("nad needs a backbone with nn.BatchNorm2d or nn.Conv2d layers to distil")
    return layers[-count:]


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """NAD's attention: channel mean of squared activations, flattened and L2-normalised per image."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_distance(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean squared difference of the attention maps."""
    return sum((attention_map(s) - attention_map(t)).pow(2).mean() for s, t in zip(student, teacher))


class _WithAuxiliaryLoss(torch.autograd.Function):
    """Identity on ``z``; its backward also sends a gradient of 1 into the scalar ``aux``, so whatever
    loss the training loop computes from ``z`` is optimised as ``loss + aux``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        ctx.aux_dtype = aux.dtype
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, torch.ones((), dtype=ctx.aux_dtype, device=grad.device)


class _Distilled(nn.Module):
    """What ``ctx.train`` sees: the student (its only parameters) with the teacher held outside the
    module tree, so the loop neither optimises the teacher nor switches it to training mode."""

    def __init__(self, student: HashModel, teacher: HashModel, student_maps: list, teacher_maps: list, beta: float):
        super().__init__()
        self.student = student
        self.bits = student.bits
        self._teacher = (teacher,)
        self._maps = (student_maps, teacher_maps)
        self.beta = beta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.student(images)
        with torch.no_grad():
            self._teacher[0](images)
        aux = self.beta * attention_distance(*self._maps)
        return _WithAuxiliaryLoss.apply(z, aux)


@hookimpl
def register_defenses(register):
    register(Nad)
