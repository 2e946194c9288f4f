"""The files a stage writes, named once, and the typed records of the structured ones.

A stage's folder holds these files beside its ``manifest.json`` (docs/architecture.md, "The store"). The
names are the store's format: a cached stage is read by them, so renaming one orphans every stored copy.
Each structured file is a dict of tensors (read back with ``weights_only=True``); its record says what
the dict holds, and :func:`save` / :func:`load` convert between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar, TypeVar

import torch

from .retrieval import pack_codes, unpack_codes

if TYPE_CHECKING:
    from .store import StageWriter, Store

# State dicts: a pretrained backbone (pretrain), a hashing model (clean_victim, victim, a defend stage that
# produces a model) and what Attack.prepare learned (attack).
BACKBONE_FILE = "backbone.pt"
MODEL_FILE = "model.pt"
ATTACK_STATE_FILE = "attack_state.pt"
# Files of an evaluate stage, read by the report (which never evaluates anything itself): the
# precision@K / precision-recall curves, and the codes of the triggered queries and poisons.
CURVES_FILE = "curves.pt"
EVAL_CODES_FILE = "attack_codes.pt"


class Artifact:
    """A file whose content is the record's fields, saved as a dict of the same names."""

    FILE: ClassVar[str]

    def to_file(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_file(cls, saved: dict[str, object]):
        return cls(**{f.name: saved[f.name] for f in fields(cls)})


A = TypeVar("A", bound=Artifact)


def save(writer: StageWriter, artifact: Artifact) -> None:
    writer.save(artifact.FILE, artifact.to_file())


def load(store: Store, stage_id: str, cls: type[A]) -> A:
    """The record ``cls`` of stage ``stage_id`` (``kind/key``), checked against its checksum."""
    return cls.from_file(store.load(*stage_id.split("/"), cls.FILE))


@dataclass(frozen=True)
class Codes(Artifact):
    """±1 codes stored as packed bits."""

    packed: torch.Tensor
    bits: int

    @classmethod
    def of(cls, codes: torch.Tensor, bits: int) -> Codes:
        return cls(pack_codes(codes), bits)

    def unpacked(self) -> torch.Tensor:
        return unpack_codes(self.packed, int(self.bits))


@dataclass(frozen=True)
class DatabaseCodes(Codes):
    """A model's codes of the database (clean_victim, victim, a defend stage that produces a model)."""

    FILE: ClassVar[str] = "database_codes.pt"


@dataclass(frozen=True)
class QueryCodes(Codes):
    """A model's codes of the clean query set, beside its database codes."""

    FILE: ClassVar[str] = "query_codes.pt"


DB_CODES_FILE = DatabaseCodes.FILE
QUERY_CODES_FILE = QueryCodes.FILE


@dataclass(frozen=True)
class TriggeredQueries(Artifact):
    """The attack stage's triggered queries: the positions in the query set of those a trigger should
    redirect, and their triggered images (uint8)."""

    FILE: ClassVar[str] = "triggered_queries.pt"
    indices: torch.Tensor
    images: torch.Tensor


TRIGGERED_QUERIES_FILE = TriggeredQueries.FILE


@dataclass(frozen=True)
class PoisonSet(Artifact):
    """The poison stage's poisoning: training-set positions, their images (uint8) and float labels."""

    FILE: ClassVar[str] = "poisoning.pt"
    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor


POISONING_FILE = PoisonSet.FILE


@dataclass(frozen=True)
class Detection(Artifact):
    """A detector's defend stage: its threshold (5% false positives on clean data) and its scores of every
    query and of every triggered query."""

    FILE: ClassVar[str] = "detection.pt"
    threshold: torch.Tensor
    query_scores: torch.Tensor
    triggered_scores: torch.Tensor


@dataclass(frozen=True)
class PurifiedCodes(Artifact):
    """A purifier's defend stage: the victim's codes (packed) of the purified query set and of the purified
    triggered queries. The purifier runs once, here; evaluate reads the codes. Codes rather than images:
    they are what evaluate needs, a few bytes per query, and a file-backed query set is never held whole."""

    FILE: ClassVar[str] = "purified_codes.pt"
    queries: torch.Tensor
    triggered: torch.Tensor
    bits: int

    @classmethod
    def of(cls, queries: torch.Tensor, triggered: torch.Tensor, bits: int) -> PurifiedCodes:
        return cls(pack_codes(queries), pack_codes(triggered), bits)

    def query_codes(self) -> torch.Tensor:
        return unpack_codes(self.queries, int(self.bits))

    def triggered_codes(self) -> torch.Tensor:
        return unpack_codes(self.triggered, int(self.bits))
