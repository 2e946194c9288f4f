"""Fine-tuning: continue training the victim on the defender's clean subset with the victim's own
objective, so that clean gradients overwrite what the backdoor relies on."""

from __future__ import annotations

from dataclasses import dataclass

from hashbench import DefenseContext, ModelRepair, RepairResult, Work, WorkSizes, hookimpl, param

from ._common import final_loss


@dataclass(frozen=True)
class FinetuneParams:
    epochs: int = param(10, "passes over the clean subset")
    lr: float = param(1e-3, "learning rate (the victim's optimizer)")

    def validate(self) -> None:
        if self.epochs < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 1 and lr > 0")


class Finetune(ModelRepair):
    """Retrain the backdoored model on the clean subset with the victim's loss (ctx.train)."""

    name = "finetune"
    Params = FinetuneParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        return Work(train=self.params.epochs * sizes.clean)

    def repair(self, ctx: DefenseContext) -> RepairResult:
        report = ctx.train(ctx.model, ctx.clean_set, epochs=self.params.epochs, lr=self.params.lr)
        return RepairResult(ctx.model, report=final_loss(report))


@hookimpl
def register_defenses(register):
    register(Finetune)
