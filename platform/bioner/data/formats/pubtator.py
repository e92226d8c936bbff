"""PubTator: `PMID|t|title`, `PMID|a|abstract`, mention and relation lines, a blank line between documents.

The document text is title + " " + abstract: the title is passage 0 (offset 0), the abstract passage 1
(offset len(title) + 1); an empty abstract makes a title-only document. A mention line is
`PMID<TAB>start<TAB>end<TAB>text<TAB>type[<TAB>ID[<TAB>more]]`: the ID goes to `infons["identifier"]`,
field N (N >= 7) to `infons["fieldN"]`, and a last field `score=0.93`, which this module writes for a
scored mention, to `Mention.score`. A relation line, `PMID<TAB>TYPE<TAB>ID1<TAB>ID2[...]`, is kept as
`{"pubtator": [TYPE, ID1, ID2, ...]}` in `Document.relations`.

Our own parser, not `bioc.pubtator`'s: that one strips the title, prints rather than raises on a bad
line, has no line numbers, and reads a mention line with no concept ID as a relation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ...errors import BionerError, CorpusError
from ..documents import Document, Mention, Passage
from ._common import SeenIds, StreamWriter, format_score, open_binary, over_limit, place, read_lines, to_score

HEADER_RE = re.compile(r"([^\t|]+)\|([ta])\|(.*)", re.DOTALL)
OFFSET_RE = re.compile(r"[+-]?\d+")
SCORE_RE = re.compile(r"score=(\S+)")
FIELD_RE = re.compile(r"field([7-9]|[1-9]\d+)")
# room on a title or abstract line for its `PMID|t|` beyond the text itself
PREFIX_BYTES = 1024


def read(path: Path, max_chars: int | None) -> Iterator[Document]:
    cap = None if max_chars is None else 4 * max_chars + 2 + PREFIX_BYTES  # UTF-8: at most 4 bytes a character
    too_long = f"a line longer than the limit of {max_chars:,} characters per text" if max_chars else ""
    seen = SeenIds(path)
    doc: Document | None = None
    with open_binary(path, "rb") as f:
        for lineno, line in read_lines(f, path, cap, too_long):
            fail = partial(CorpusError, path, lineno)
            if not line.strip():
                if doc is not None and seen.new(doc):
                    yield doc
                doc = None
                continue
            header = HEADER_RE.fullmatch(line)
            if header:
                doc_id, kind, text = header.groups()
                if kind == "t":
                    if doc is not None and seen.new(doc):
                        yield doc
                    if not text:
                        raise fail(f"document {doc_id} has an empty title")
                    if max_chars is not None and len(text) > max_chars:
                        raise fail(over_limit(f"title of document {doc_id}", len(text), max_chars))
                    doc = Document(doc_id, [Passage(0, text, {"type": "title"})], source=str(path), line=lineno)
                    continue
                if doc is None or doc.id != doc_id:
                    raise fail(f"an abstract line for document {doc_id} with no title line of {doc_id} before it")
                if len(doc.passages) > 1 or doc.line != lineno - 1:
                    raise fail(f"an abstract line for document {doc_id} that does not come right after its title line")
                if max_chars is not None and len(text) > max_chars:
                    raise fail(over_limit(f"abstract of document {doc_id}", len(text), max_chars))
                if text:
                    doc.passages.append(Passage(len(doc.passages[0].text) + 1, text, {"type": "abstract"}))
                continue
            fields = line.split("\t")
            if len(fields) < 4:
                raise fail(f"not a title, abstract, mention or relation line: {_short(line)}")
            if doc is None:
                raise fail(
                    f"an annotation line with no title line before it (a blank line ends a document): {_short(line)}"
                )
            if fields[0] != doc.id:
                raise fail(
                    f"a line for document {fields[0]} within document {doc.id} (which starts at line {doc.line})"
                )
            if OFFSET_RE.fullmatch(fields[1]):
                m = _mention(fields, fail)
                held = doc.text_at(m.start, m.end) if 0 <= m.start < m.end else None
                if held is not None and held != m.text and _quotes_blanked(held, m.text):
                    m.text = held
                place(doc, m, fail)
            else:
                doc.relations.append({"pubtator": fields[1:]})
        if doc is not None and seen.new(doc):
            yield doc


def _mention(fields: list[str], fail) -> Mention:
    if len(fields) < 5:
        raise fail(
            f"a mention line with {len(fields)} fields; expected PMID, start, end, text, type and an optional ID"
        )
    if not OFFSET_RE.fullmatch(fields[2]):
        raise fail(f"end offset {fields[2]!r} is not a whole number")
    start, end, text, type_ = int(fields[1]), int(fields[2]), fields[3], fields[4]
    if not type_:
        raise fail("a mention line with an empty entity type")
    rest, score = fields[5:], None
    if rest and SCORE_RE.fullmatch(rest[-1]):
        score = to_score(rest.pop()[len("score=") :], fail)
    infons = {}
    if rest:
        infons["identifier"] = rest[0]
        infons.update({f"field{i}": v for i, v in enumerate(rest[1:], start=7)})
    return Mention(start, end, text, type_, infons=infons, score=score)


def _quotes_blanked(held: str, said: str) -> bool:
    """Whether `said` is `held` with double quotes made spaces, as in one mention line of the NCBI
    disease corpus (`febrile seizures   plus  ` for `febrile seizures " plus "`); the document's
    text is then taken as the mention's."""
    return len(held) == len(said) and all(a == b or (a == '"' and b == " ") for a, b in zip(held, said, strict=True))


def _short(line: str, n: int = 80) -> str:
    return repr(line if len(line) <= n else line[:n] + "...")


class Writer(StreamWriter):
    """Writes documents of a title and an optional abstract (the PubTator layout) as they come."""

    def __init__(self, f: BinaryIO, owned: bool):
        super().__init__(f, owned)
        self.ids: set[str] = set()

    def write(self, doc: Document) -> None:
        lines = self.lines(doc)
        blank = "\n" if len(self.ids) > 1 else ""  # a blank line between documents, as NCBI's files have
        self.f.write((blank + "\n".join(lines) + "\n").encode("utf-8"))

    def lines(self, doc: Document) -> list[str]:
        def fail(what: str) -> BionerError:
            return BionerError(f"{doc.where()}: cannot be written as PubTator: {what}")

        if not doc.id or any(c in doc.id for c in "|\t\r\n") or doc.id != doc.id.strip():
            raise fail("a PubTator document ID may not be empty nor hold '|', a tab, a line break or edge spaces")
        if doc.id in self.ids:
            raise fail("a second document with this ID")
        self.ids.add(doc.id)
        ps = doc.passages
        if not 1 <= len(ps) <= 2 or ps[0].offset != 0 or (len(ps) == 2 and ps[1].offset != len(ps[0].text) + 1):
            raise fail(
                f"PubTator holds a title at offset 0 and an abstract right after it, one space between; "
                f"this document has passages at {', '.join(str(p.offset) for p in ps) or 'none'}"
            )
        if not all(p.text and "\n" not in p.text and "\r" not in p.text for p in ps):
            raise fail("a title or abstract that is empty or holds a line break")
        lines = [f"{doc.id}|t|{ps[0].text}", f"{doc.id}|a|{ps[1].text if len(ps) == 2 else ''}"]
        for m in doc.mentions:
            if m.fragments:
                raise fail(f"mention {m.start}-{m.end} is discontinuous, which PubTator cannot hold")
            if not (m.type and _one_field(m.type) and _one_field(m.text)):
                raise fail(f"mention {m.start}-{m.end}: an empty type, or a tab or line break in its text or type")
            extra = [m.infons[k] for k in sorted((k for k in m.infons if FIELD_RE.fullmatch(k)), key=_field_number)]
            rest = ([m.infons.get("identifier", "")] if "identifier" in m.infons or extra else []) + extra
            if m.score is not None:
                rest.append(f"score={format_score(m.score)}")
            if not all(_one_field(v) for v in rest):
                raise fail(f"mention {m.start}-{m.end}: a tab or line break in its identifier")
            lines.append("\t".join([doc.id, str(m.start), str(m.end), m.text, m.type, *rest]))
        for rel in doc.relations:
            fields = rel.get("pubtator")
            if isinstance(fields, list) and fields and all(isinstance(x, str) and _one_field(x) for x in fields):
                lines.append("\t".join([doc.id, *fields]))
        return lines


def _field_number(key: str) -> int:
    return int(key[len("field") :])


def _one_field(x: str) -> bool:
    return not any(c in x for c in "\t\r\n")
