"""BioC documents <-> Documents, for BioC XML and BioC JSON alike.

Both readers hand over a document as a dict in BioC JSON's shape (XML elements are turned into one,
each annotation with `_line`, the line it is on). A passage's offset and text come from the file;
annotations of the document, of a passage and of its sentences become mentions of the passage
holding them: one location, a contiguous mention; several, `Mention.fragments`, start and end their
min and max. `infons["type"]` is the mention's type, `infons["score"]` its score, the other infons
stay in `Mention.infons`. Relations are kept as `{"id", "infons", "nodes": [{"refid", "role"}]}`,
with `"passage": OFFSET` for a passage's (or a sentence's) own, and written back where they were.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import bioc

from ...errors import BionerError, CorpusError
from ..documents import Document, Mention, Passage
from ._common import check_passages, format_score, fresh_ids, place, to_int, to_score

# characters XML 1.0 cannot hold, which lxml refuses to write
NOT_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _infons(value, fail) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"infons {value!r} are not an object")
    return {str(k): "" if v is None else v if isinstance(v, str) else str(v) for k, v in value.items()}


def _list(obj: dict, key: str, fail) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise fail(f"{key!r} is not a list of objects")
    return value


def to_document(d: dict, path: Path, line: int, max_chars: int | None) -> Document:
    """The Document of one BioC document (a dict in BioC JSON's shape), checked."""
    if not isinstance(d, dict):
        raise CorpusError(path, line, f"a document that is not an object: {str(d)[:80]}")
    doc_id = d.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise CorpusError(path, line, "a document with no ID")

    def fail_at(at: int, what: str) -> CorpusError:
        return CorpusError(path, at or line, f"document {doc_id}: {what}")

    fail = partial(fail_at, line)
    doc = Document(doc_id, [], _infons(d.get("infons"), fail), source=str(path), line=line)
    annotations: list[tuple[dict, Passage | None]] = []
    for p in _list(d, "passages", fail):
        pfail = partial(fail_at, p.get("_line", 0))
        offset = to_int(p.get("offset"), "passage offset", pfail)
        text = p.get("text")
        if text is None or text == "":
            raise pfail(f"the passage at offset {offset} has no text")
        if not isinstance(text, str):
            raise pfail(f"the passage at offset {offset} has a text that is not a string")
        passage = Passage(offset, text, _infons(p.get("infons"), pfail))
        doc.passages.append(passage)
        annotations += [(a, passage) for a in _list(p, "annotations", pfail)]
        doc.relations += [_relation(r, pfail, offset) for r in _list(p, "relations", pfail)]
        for s in _list(p, "sentences", pfail):
            annotations += [(a, passage) for a in _list(s, "annotations", pfail)]
            doc.relations += [_relation(r, pfail, offset) for r in _list(s, "relations", pfail)]
    if not doc.passages:
        raise fail("no passage")
    check_passages(doc, path, line, max_chars)
    annotations += [(a, None) for a in _list(d, "annotations", fail)]
    doc.relations += [_relation(r, fail) for r in _list(d, "relations", fail)]
    for a, passage in annotations:
        afail = partial(fail_at, a.get("_line", 0))
        m = _mention(a, afail)
        place(
            doc,
            m,
            lambda what, m=m, afail=afail: afail(f"offset {m.start}: annotation {m.id}: {what}"),
            passage,
            given_text=m.text is not None,
            says="the annotation says",
        )
    return doc


def _mention(a: dict, fail) -> Mention:
    ann_id = a.get("id")
    ann_id = None if ann_id is None else str(ann_id)
    spans = []
    for loc in _list(a, "locations", fail):
        offset = to_int(loc.get("offset"), f"annotation {ann_id}: location offset", fail)
        length = to_int(loc.get("length"), f"annotation {ann_id}: location length", fail)
        spans.append((offset, offset + length))
    if not spans:
        raise fail(f"annotation {ann_id} has no location")
    infons = _infons(a.get("infons"), fail)
    type_ = infons.pop("type", "")
    if not type_:
        raise fail(f"annotation {ann_id} has no 'type' infon")
    score = infons.pop("score", None)
    text = a.get("text")
    if text is not None and not isinstance(text, str):
        raise fail(f"annotation {ann_id}: a text that is not a string")
    return Mention(
        min(s for s, _ in spans),
        max(e for _, e in spans),
        text,
        type_,
        ann_id,  # type: ignore[arg-type]
        tuple(spans) if len(spans) > 1 else (),
        infons,
        None if score is None else to_score(score, fail),
    )


def _relation(r: dict, fail, passage: int | None = None) -> dict:
    nodes = [{"refid": str(n.get("refid") or ""), "role": str(n.get("role") or "")} for n in _list(r, "nodes", fail)]
    rel = {"id": "" if r.get("id") is None else str(r["id"]), "infons": _infons(r.get("infons"), fail), "nodes": nodes}
    if passage is not None:
        rel["passage"] = passage
    return rel


def from_document(doc: Document, xml: bool = True) -> bioc.BioCDocument:
    """The BioCDocument of `doc`; relations other than BioC ones (PubTator's, brat's) are left out.
    For XML (`xml`), a text with a character XML cannot hold is refused."""

    def fail(what: str) -> BionerError:
        return BionerError(f"{doc.where()}: cannot be written as BioC: {what}")

    if xml:
        for text in [doc.id, *(p.text for p in doc.passages), *(m.text for m in doc.mentions)]:
            bad = NOT_XML_RE.search(text)
            if bad:
                raise fail(f"U+{ord(bad.group()):04X} in {text[:40]!r}, a character XML cannot hold")
    used = {m.id for m in doc.mentions if m.id}
    new_ids = fresh_ids(used, "")
    out = bioc.BioCDocument()
    out.id, out.infons = doc.id, dict(doc.infons)
    by_offset = {}
    for p in doc.passages:
        bp = bioc.BioCPassage.of_text(p.text, p.offset)
        bp.infons = dict(p.infons)
        for m in p.mentions:
            a = bioc.BioCAnnotation()
            a.id = m.id or next(new_ids)
            a.infons = {"type": m.type, **{k: v for k, v in m.infons.items() if k not in ("type", "score")}}
            if m.score is not None:
                a.infons["score"] = format_score(m.score)
            for s, e in m.fragments or ((m.start, m.end),):
                a.add_location(bioc.BioCLocation(s, e - s))
            a.text = m.text
            bp.add_annotation(a)
        out.add_passage(bp)
        by_offset.setdefault(p.offset, bp)
    for rel in doc.relations:
        if not isinstance(rel.get("nodes"), list):
            continue
        r = bioc.BioCRelation()
        r.id, r.infons = str(rel.get("id") or ""), dict(rel.get("infons") or {})
        for n in rel["nodes"]:
            r.add_node(bioc.BioCNode(str(n.get("refid", "")), str(n.get("role", ""))))
        by_offset.get(rel.get("passage"), out).add_relation(r)
    return out
