"""A dataset spec over documents: its classes mapped to the spec's types, its documents as training
sentences (BIO tags) or as gold mentions, and what the conversion had to decide, counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import CorpusError
from .documents import Document
from .formats import read_documents
from .sentences import Decisions, labelled_sentences
from .specs import DatasetSpec


@dataclass
class Conversion:
    """What reading a split of documents found and decided (`bioner datasets check` prints it)."""

    documents: int = 0
    mentions: int = 0  # after type_map, ignored classes not counted
    ignored: Counter = field(default_factory=Counter)  # class -> mentions mapped to null
    decisions: Decisions = field(default_factory=Decisions)


def map_types(doc: Document, spec: DatasetSpec, conv: Conversion | None = None) -> Document:
    """The document with every mention's class replaced by its spec type (type_map); classes mapped to
    null are removed and counted. A class that is neither mapped nor a spec type stops the read."""
    for p in doc.passages:
        kept = []
        for m in p.mentions:
            if m.type in spec.type_map:
                target = spec.type_map[m.type]
                if target is None:
                    if conv is not None:
                        conv.ignored[m.type] += 1
                    continue
                m.type = target
            elif m.type not in spec.entity_types:
                raise CorpusError(
                    doc.source,
                    doc.line,
                    f"document {doc.id}, offset {m.start}: class {m.type!r} is neither an "
                    f"entity type of {spec.name} ({', '.join(spec.types)}) nor in its type_map "
                    "(map it to a type, or to null to ignore it)",
                )
            kept.append(m)
        p.mentions = kept
    return doc


def gold_documents(spec: DatasetSpec, split: str, conv: Conversion | None = None) -> Iterator[Document]:
    """The split's documents, streamed, with mentions typed as the spec's types."""
    for doc in read_documents(spec.split_file(split), spec.format):
        doc = map_types(doc, spec, conv)
        if conv is not None:
            conv.documents += 1
            conv.mentions += len(doc.mentions)
        yield doc


def document_sentences(
    spec: DatasetSpec, split: str, conv: Conversion | None = None
) -> Iterator[tuple[list[str], list[str]]]:
    """(words, BIO tags) of every sentence of the split's documents, in document order."""
    conv = conv if conv is not None else Conversion()
    for doc in gold_documents(spec, split, conv):
        for sentence, tags in labelled_sentences(doc, conv.decisions):
            yield [w for w, _, _ in sentence.words], tags
