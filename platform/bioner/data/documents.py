"""Documents, passages and mentions: the unit of work of biomedical corpora and of what users tag.

Offsets are character offsets into the document as its format defines it (PubTator: title + " " +
abstract; BioC: passage offset + position in the passage's text; brat and JSON lines: the text).
`Document.text_at(m.start, m.end) == m.text` holds for every contiguous mention read or written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field


@dataclass
class Mention:
    """An entity mention; `start`/`end` are document offsets, `end` exclusive."""

    start: int
    end: int
    text: str
    type: str
    id: str | None = None  # the annotation's id in its file (brat `T3`, BioC annotation id)
    # A discontinuous mention's pieces (brat `T1 Disease 0 5;10 15`), document offsets; empty when contiguous.
    fragments: tuple[tuple[int, int], ...] = ()
    infons: dict[str, str] = field(default_factory=dict)  # what else the file says of it (a concept ID, ...)
    score: float | None = None  # a model's confidence, for predicted mentions

    @property
    def discontinuous(self) -> bool:
        return len(self.fragments) > 1


@dataclass
class Passage:
    """A stretch of a document's text (title, abstract, a section) at `offset` in the document."""

    offset: int
    text: str
    infons: dict[str, str] = field(default_factory=dict)  # BioC's `type` (title, abstract, ...) and the rest
    mentions: list[Mention] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


@dataclass
class Document:
    """One document: its ID, passages in offset order, and where it was read (for error messages)."""

    id: str
    passages: list[Passage]
    infons: dict[str, str] = field(default_factory=dict)
    relations: list[dict] = field(default_factory=list)  # kept as read and written back; the NER task ignores them
    source: str = ""  # the file it came from
    line: int = 0  # the line it starts at in that file (0: not known)

    @property
    def mentions(self) -> list[Mention]:
        return [m for p in self.passages for m in p.mentions]

    def where(self, offset: int | None = None) -> str:
        """`FILE:LINE: document ID` (and `offset N`) for messages."""
        place = f"{self.source}:{self.line}" if self.line else self.source or "<input>"
        return f"{place}: document {self.id}" + (f", offset {offset}" if offset is not None else "")

    def passage_at(self, start: int, end: int) -> Passage | None:
        """The passage holding document offsets [start, end), or None when no single passage does."""
        for p in self.passages:
            if p.offset <= start and end <= p.end:
                return p
        return None

    def text_at(self, start: int, end: int) -> str | None:
        """The document's text at [start, end), or None when that range is not inside one passage."""
        p = self.passage_at(start, end)
        return None if p is None else p.text[start - p.offset : end - p.offset]

    def iter_mentions(self) -> Iterator[tuple[Passage, Mention]]:
        for p in self.passages:
            for m in p.mentions:
                yield p, m

    def without_mentions(self) -> Document:
        """The same document, passages and text, with no mentions (what a model is asked to annotate)."""
        return Document(
            self.id,
            [Passage(p.offset, p.text, dict(p.infons)) for p in self.passages],
            dict(self.infons),
            list(self.relations),
            self.source,
            self.line,
        )

    def to_record(self) -> dict:
        """Everything of the document as plain JSON values (what crosses a process boundary)."""
        return asdict(self)

    @classmethod
    def from_record(cls, r: dict) -> Document:
        """The document `to_record` gave."""
        passages = [
            Passage(
                p["offset"],
                p["text"],
                p["infons"],
                [Mention(**{**m, "fragments": tuple(tuple(f) for f in m["fragments"])}) for m in p["mentions"]],
            )
            for p in r["passages"]
        ]
        return cls(r["id"], passages, r["infons"], r["relations"], r["source"], r["line"])
