"""Query texts for the MRC auxiliary task, one per entity type and knowledge source (METHOD.md)."""

from __future__ import annotations

import random

from ..config import QUERY_SOURCES
from .iob import Split, entity_strings
from .specs import DatasetSpec

_RANDOM_POOL = ("wikipedia", "annotation", "dictionary")


class Queries:
    """Resolves the query text for (entity type, example) under one source.

    The dictionary source fills `{examples}` with distinct entity strings sampled, seeded, from
    the training split it is given (never from devel or test). `random` picks one of
    wikipedia/annotation/dictionary per example, deterministically from the seed and the
    example index, so features and re-runs agree.
    """

    def __init__(self, texts: dict[str, dict[str, str]], source: str, seed: int = 0):
        if source not in QUERY_SOURCES:
            raise ValueError(f"query_source must be one of {', '.join(QUERY_SOURCES)}, got {source!r}")
        self.texts, self.source, self.seed = texts, source, seed

    @classmethod
    def build(cls, spec: DatasetSpec, source: str, train: Split | None, seed: int = 0, n_examples: int = 3):
        texts: dict[str, dict[str, str]] = {}
        examples = entity_strings(train) if train is not None and source in ("dictionary", "random") else {}
        for typ, q in spec.entity_types.items():
            pool = sorted(set(examples.get(typ, [])))
            picked = random.Random(f"{seed}:{typ}").sample(pool, min(n_examples, len(pool))) if pool else [typ]
            texts[typ] = {
                "wikipedia": q.wikipedia,
                "annotation": q.annotation,
                "dictionary": q.dictionary.format(examples=", ".join(picked)),
            }
        return cls(texts, source, seed)

    def text(self, typ: str, example: int = 0) -> str:
        if self.source == "none":
            return ""
        src = self.source
        if src == "random":
            src = random.Random(f"{self.seed}:{typ}:{example}").choice(_RANDOM_POOL)
        return self.texts[typ][src]

    def all_texts(self, typ: str) -> list[str]:
        """Every text this source can produce for a type (for sizing windows)."""
        if self.source == "none":
            return [""]
        if self.source == "random":
            return [self.texts[typ][s] for s in _RANDOM_POOL]
        return [self.texts[typ][self.source]]

    def to_dict(self) -> dict:
        return {"source": self.source, "seed": self.seed, "texts": self.texts}

    @classmethod
    def from_dict(cls, d: dict) -> Queries:
        return cls(d["texts"], d["source"], d.get("seed", 0))
