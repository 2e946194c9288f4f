"""What several stage bodies share: victim models in and out of the store, and the stage log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .. import artifacts
from ..artifacts import MODEL_FILE, BACKBONE_FILE, DatabaseCodes, QueryCodes
from ..data import DatasetSplits, ImageSet
from ..evaluation import encode_set
from ..loading import instantiate, load_dataset, new_model, victim_generator, victim_recipe
from ..models import HashModel, freeze
from ..records import CleanVictimStage, VictimStage
from ..store import StageWriter
from ..training import train_hash_model

if TYPE_CHECKING:
    from ..runner import StageRunner

VictimRecord = CleanVictimStage | VictimStage


def load_model(runner: StageRunner, victim: VictimRecord, stage_id: str | None = None) -> HashModel:
    """The model of ``victim``'s settings stored by stage ``stage_id`` (default: ``victim`` itself; a defend
    stage that produces a model stores one of its victim's settings)."""
    splits = load_dataset(victim.dataset)
    model = new_model(victim.victim, splits.image_size, victim.seed)
    model.load_state_dict(runner.store.load(*(stage_id or victim.id).split("/"), MODEL_FILE))
    return model.to(runner.device).eval()


def surrogate_loader(runner: StageRunner, surrogate: CleanVictimStage | None) -> Callable[[], HashModel] | None:
    """Loads the frozen surrogate on first use, once (None: the attack needs none)."""
    if surrogate is None:
        return None
    cached: dict[str, HashModel] = {}

    def load() -> HashModel:
        if "model" not in cached:
            cached["model"] = freeze(load_model(runner, surrogate))
        return cached["model"]

    return load


def train_victim(runner: StageRunner, writer: StageWriter, victim: VictimRecord, train_set: ImageSet, what: str) -> HashModel:
    """A victim of ``victim``'s settings trained on ``train_set``, from its pretrained backbone if it has one."""
    method = instantiate("method", victim.victim["method"])
    recipe = victim_recipe(victim.victim)
    model = new_model(victim.victim, load_dataset(victim.dataset).image_size, victim.seed)
    if victim.pretrain is not None:
        model.backbone.load_state_dict(runner.store.load(*victim.pretrain.id.split("/"), BACKBONE_FILE))
    report = train_hash_model(
        model, method, train_set, recipe, runner.device, victim_generator(victim.victim, victim.seed), what=what,
        on_epoch=lambda epoch, loss: runner.say(f"  {what}: epoch {epoch + 1}/{recipe.epochs} loss {loss:.4f}"),
    )
    writer.manifest["logs"]["epoch_losses"] = report.epoch_losses
    writer.manifest["metrics"]["train_seconds"] = report.seconds
    writer.manifest["metrics"]["train_images_per_second"] = report.images_per_second
    return model


def save_model(runner: StageRunner, writer: StageWriter, model: HashModel, splits: DatasetSplits) -> None:
    """The weights, plus the database and query codes (packed bits), computed once per model: every
    results row of the model reads them instead of encoding the sets again."""
    writer.save(MODEL_FILE, {k: v.cpu() for k, v in model.state_dict().items()})
    # encode as a reloaded model would be (training leaves it channels-last on CUDA), so cached codes
    # and codes encoded at evaluation come from the same kernels
    model = model.to(memory_format=torch.contiguous_format)
    for record, image_set in ((DatabaseCodes, splits.database), (QueryCodes, splits.query)):
        artifacts.save(writer, record.of(encode_set(model, image_set, runner.device), model.bits))


def database_codes(runner: StageRunner, stage_id: str) -> torch.Tensor:
    return artifacts.load(runner.store, stage_id, DatabaseCodes).unpacked()


def query_codes(runner: StageRunner, stage_id: str, model: HashModel, splits: DatasetSplits) -> torch.Tensor:
    """The model's codes of the clean query set; encoded here for stages stored before they were cached."""
    if QueryCodes.FILE not in runner.store.manifest(*stage_id.split("/")).get("files", {}):
        return encode_set(model, splits.query, runner.device)
    return artifacts.load(runner.store, stage_id, QueryCodes).unpacked()


def logger(writer: StageWriter) -> Callable[..., None]:
    """A context's ``log``: each call appends its values to the manifest's logs."""

    def record(**metrics: float) -> None:
        for name, value in metrics.items():
            writer.manifest["logs"].setdefault(name, []).append(float(value))

    return record
