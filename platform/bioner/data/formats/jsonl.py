"""JSON lines: one document a line, `{"id": "...", "text": "...", "entities": [...]}`.

An entity is `{"start", "end", "text", "type"}` (document offsets, end exclusive) with optional
`"score"`, `"id"`, `"fragments"` ([[start, end], ...], for a discontinuous mention) and `"infons"`;
any other key of an entity (`"identifier": "D012878"`) is one of its infons. `"mentions"` is read as
`"entities"`. Instead of `"text"`, `"passages": [{"offset", "text", "infons"?}]` gives a document of
several passages (what the writer writes when a document has more than one, or one that is not a
plain text at offset 0). `"infons"` (an object) and `"relations"` (a list of objects) of a document
are kept as they are; any other key of a document goes to its infons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ...errors import BionerError, CorpusError
from ..documents import Document, Mention, Passage
from ._common import SeenIds, StreamWriter, check_passages, json_error, open_binary, place, read_lines, to_int, to_score

DOC_KEYS = {"id", "text", "passages", "entities", "mentions", "infons", "relations"}
ENTITY_KEYS = {"start", "end", "text", "type", "score", "id", "fragments", "infons"}


def line_cap(max_chars: int | None) -> int | None:
    """Bytes one JSON line may take: a text of `max_chars` characters, each escaped in up to 12 bytes
    (an escaped surrogate pair), plus a MiB for its annotations."""
    return None if max_chars is None else 12 * max_chars + 2**20


def _str_value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def read(path: Path, max_chars: int | None) -> Iterator[Document]:
    seen = SeenIds(path)
    too_long = f"a line longer than the limit for {max_chars:,} characters per text" if max_chars else ""
    with open_binary(path, "rb") as f:
        for lineno, line in read_lines(f, path, line_cap(max_chars), too_long):
            if not line.strip():
                continue
            fail = partial(CorpusError, path, lineno)
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise fail(json_error(e)) from None
            if not isinstance(obj, dict):
                raise fail(f"expected a JSON object, found {type(obj).__name__}")
            doc = _document(obj, path, lineno, max_chars)
            if seen.new(doc):
                yield doc


def _document(obj: dict, path: Path, lineno: int, max_chars: int | None) -> Document:
    fail = partial(CorpusError, path, lineno)
    doc_id = obj.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if doc_id is None:
        raise fail('no "id"')
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise fail(f'"id" {doc_id!r} is not a non-empty string')

    def dfail(what: str) -> CorpusError:
        return fail(f"document {doc_id}: {what}")

    infons = obj.get("infons", {})
    if not isinstance(infons, dict):
        raise dfail('"infons" is not an object')
    infons = {str(k): _str_value(v) for k, v in infons.items()}
    infons.update({k: _str_value(v) for k, v in obj.items() if k not in DOC_KEYS})
    relations = obj.get("relations", [])
    if not isinstance(relations, list) or not all(isinstance(r, dict) for r in relations):
        raise dfail('"relations" is not a list of objects')
    doc = Document(doc_id, [], infons, list(relations), str(path), lineno)
    if "passages" in obj:
        if "text" in obj:
            raise dfail('both "text" and "passages"')
        passages = obj["passages"]
        if not isinstance(passages, list) or not passages or not all(isinstance(p, dict) for p in passages):
            raise dfail('"passages" is not a non-empty list of objects')
        for i, p in enumerate(passages, 1):
            text, pinfons = p.get("text"), p.get("infons", {})
            if not isinstance(text, str) or not text:
                raise dfail(f'passage {i}: "text" is not a non-empty string')
            if not isinstance(pinfons, dict):
                raise dfail(f'passage {i}: "infons" is not an object')
            offset = to_int(p.get("offset"), f"passage {i}: offset", dfail)
            doc.passages.append(Passage(offset, text, {str(k): _str_value(v) for k, v in pinfons.items()}))
    else:
        text = obj.get("text")
        if text is None:
            raise dfail('no "text" (nor "passages")')
        if not isinstance(text, str):
            raise dfail(f'"text" is a {type(text).__name__}, not a string')
        if not text:
            raise dfail('an empty "text"')
        doc.passages.append(Passage(0, text))
    check_passages(doc, path, lineno, max_chars)
    entities = obj.get("entities", obj.get("mentions", []))
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise dfail('"entities" is not a list of objects')
    for i, e in enumerate(entities, 1):
        efail = partial(lambda i, what: dfail(f"entity {i}: {what}"), i)
        m = _mention(e, efail)
        place(doc, m, efail, given_text=m.text is not None, says="the entity says")
    return doc


def _mention(e: dict, fail) -> Mention:
    start, end = to_int(e.get("start"), "start", fail), to_int(e.get("end"), "end", fail)
    text, type_, ann_id = e.get("text"), e.get("type"), e.get("id")
    if text is not None and not isinstance(text, str):
        raise fail('"text" is not a string')
    if not isinstance(type_, str) or not type_:
        raise fail('"type" is not a non-empty string')
    pairs = e.get("fragments") or []
    if not isinstance(pairs, list) or not all(isinstance(f, list) and len(f) == 2 for f in pairs):
        raise fail('"fragments" is not a list of [start, end] pairs')
    fragments = tuple((to_int(a, "fragment start", fail), to_int(b, "fragment end", fail)) for a, b in pairs)
    if len(fragments) == 1:
        fragments = ()
    if fragments and (start, end) != (min(a for a, _ in fragments), max(b for _, b in fragments)):
        raise fail(f"offsets {start}-{end} are not the first start and the last end of its fragments")
    infons = e.get("infons", {})
    if not isinstance(infons, dict):
        raise fail('"infons" is not an object')
    infons = {str(k): _str_value(v) for k, v in infons.items()}
    infons.update({k: _str_value(v) for k, v in e.items() if k not in ENTITY_KEYS})
    score = e.get("score")
    return Mention(
        start,
        end,
        text,
        type_,
        None if ann_id is None else str(ann_id),  # type: ignore[arg-type]
        fragments,
        infons,
        None if score is None else to_score(score, fail),
    )


def to_json(doc: Document) -> dict:
    """The JSON object of `doc`, as this module reads it back."""
    out: dict = {"id": doc.id}
    ps = doc.passages
    if len(ps) == 1 and ps[0].offset == 0 and not ps[0].infons:
        out["text"] = ps[0].text
    else:
        out["passages"] = [
            {"offset": p.offset, "text": p.text, **({"infons": p.infons} if p.infons else {})} for p in ps
        ]
    if doc.infons:
        out["infons"] = dict(doc.infons)
    entities = []
    for m in doc.mentions:
        e: dict = {"start": m.start, "end": m.end, "text": m.text, "type": m.type}
        if m.id is not None:
            e["id"] = m.id
        if m.fragments:
            e["fragments"] = [list(f) for f in m.fragments]
        if m.score is not None:
            e["score"] = m.score
        # infons flat, as a reader expects `"identifier": ...`, unless a name is one of the entity's own keys
        e.update({k: v for k, v in m.infons.items() if k not in ENTITY_KEYS})
        nested = {k: v for k, v in m.infons.items() if k in ENTITY_KEYS}
        if nested:
            e["infons"] = nested
        entities.append(e)
    out["entities"] = entities
    if doc.relations:
        out["relations"] = list(doc.relations)
    return out


class Writer(StreamWriter):
    def __init__(self, f: BinaryIO, owned: bool):
        super().__init__(f, owned)
        self.ids: set[str] = set()

    def write(self, doc: Document) -> None:
        if doc.id in self.ids:
            raise BionerError(f"{doc.where()}: a second document with this ID")
        self.ids.add(doc.id)
        try:
            line = (json.dumps(to_json(doc), ensure_ascii=False) + "\n").encode("utf-8")
        except (TypeError, ValueError) as e:  # a relation holding what JSON cannot, a lone surrogate
            raise BionerError(f"{doc.where()}: cannot be written as JSON lines: {e}") from None
        self.f.write(line)
