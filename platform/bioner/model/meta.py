"""ModelMeta: what a saved model needs besides its weights, as bioner.json holds it.

Training writes it, and everything that loads a model reads it: the Tagger (labels, types, max
length, queries), `bioner extend` (corpora, dataset, training settings), the HF export (labels).
The file carries `format_version`: 2 is this dataclass with every field written; 1 (or no version)
is the dict that models were saved as before it, where the optional keys may be missing and take
the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

FORMAT_VERSION = 2


@dataclass(frozen=True)
class CorpusTypes:
    """A member corpus of the training dataset and the entity types it annotates."""

    name: str
    types: list[str]


@dataclass(frozen=True)
class ModelMeta:
    """What inference and extension need besides the weights."""

    labels: list[str]  # O, then B-/I- per type: the token head's rows
    types: list[str]
    max_length: int  # pieces per encoder input; longer sentences are windowed
    dataset: str | None = None  # the training dataset's name (None: not recorded)
    encoder: str | None = None  # the encoder it was trained from (name or folder)
    dropout: float = 0.1
    multitask: bool = False  # trained with the MRC heads too
    queries: dict[str, Any] | None = None  # data.queries.Queries.to_dict() of its MRC queries
    # what each corpus annotates, so that a composite model is scored on each corpus's own types;
    # empty for models saved before composite datasets
    corpora: list[CorpusTypes] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def corpus_names(self) -> list[str]:
        """The corpora it was trained on: its members, or its dataset for a model saved before them."""
        return [c.name for c in self.corpora] or ([self.dataset] if self.dataset else [])

    def to_json(self, num_labels: int | None = None) -> dict[str, Any]:
        """bioner.json's content, keys in the order models have always been saved in; `num_labels`:
        the token head's row count when it is known (the saved weights'), else len(labels)."""
        return {
            "format_version": FORMAT_VERSION,
            "num_labels": self.num_labels if num_labels is None else num_labels,
            "labels": self.labels,
            "types": self.types,
            "dataset": self.dataset,
            "encoder": self.encoder,
            "max_length": self.max_length,
            "dropout": self.dropout,
            "multitask": self.multitask,
            "queries": self.queries,
            "corpora": [{"name": c.name, "types": c.types} for c in self.corpora],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ModelMeta:
        """From bioner.json's content, of any format version: keys it lacks take their defaults, keys
        it does not know are left out. Raises KeyError for a missing required key, TypeError or
        ValueError for a malformed one."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in raw.items() if k in known}
        missing = [k for k in ("labels", "types", "max_length") if k not in kept]
        if missing:
            raise KeyError(missing[0])
        return cls.of(kept)

    @classmethod
    def of(cls, meta: ModelMeta | Mapping[str, Any]) -> ModelMeta:
        """A ModelMeta as it is, or one from a dict of its fields (corpora as dicts); a key that is
        not a field is a TypeError, as for the constructor."""
        if isinstance(meta, ModelMeta):
            return meta
        d = dict(meta)
        if "max_length" in d:
            d["max_length"] = int(d["max_length"])
        corpora = d.pop("corpora", None) or []
        return cls(
            **d,
            corpora=[c if isinstance(c, CorpusTypes) else CorpusTypes(c["name"], list(c["types"])) for c in corpora],
        )

    # Key access for readers not yet moved to attributes (studies/extend.py); it returns what
    # bioner.json holds under that key.
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)
