"""brat standoff: a folder of `NAME.txt` and `NAME.ann` pairs, one document each (ID = NAME).

The document is one passage at offset 0 holding the whole `.txt` (read as it is: CRLF line ends
count as two characters, as brat counts them). Entities (`T1<TAB>Type 0 5;10 15<TAB>text`) are the
mentions: several spans make `Mention.fragments`, start and end their min and max, the text as the
`.ann` gives it. A note `#N<TAB>AnnotatorNotes T1<TAB>score=0.93` is the mention's score (what the
writer writes for a scored mention); every other line (relations, events, attributes,
normalizations, other notes) is kept as `{"brat": LINE}` in `Document.relations` and written back.
A `.txt` without a `.ann` is a document with no mentions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from bioc.brat import decoder as brat_decoder

from ...errors import BionerError, CorpusError
from ..documents import Document, Mention, Passage
from ._common import decode, document_text, format_score, fresh_ids, over_limit, place, read_lines, to_score

OFFSET_RE = re.compile(r"\d+")
SCORE_NOTE_RE = re.compile(r"AnnotatorNotes (T\S+)\tscore=(\S+)")
TID_RE = re.compile(r"T\S+")
# bioc's parsers of the other kinds of line, to check them (they assert; their errors are turned into ours)
CHECKS = {
    "R": brat_decoder.loads_brat_relation,
    "E": brat_decoder.loads_brat_event,
    "A": brat_decoder.loads_brat_attribute,
    "M": brat_decoder.loads_brat_attribute,
    "*": brat_decoder.loads_brat_equiv,
    "#": brat_decoder.loads_brat_note,
}


def read(folder: Path, max_chars: int | None) -> Iterator[Document]:
    files = {e.name for e in os.scandir(folder) if e.is_file()}
    texts = sorted(n[: -len(".txt")] for n in files if n.endswith(".txt"))
    for n in sorted(files):
        if n.endswith(".ann") and n[: -len(".ann")] + ".txt" not in files:
            raise CorpusError(folder / n, 1, f"no {n[: -len('.ann')]}.txt beside this .ann file")
    for name in texts:
        yield _document(folder, name, max_chars)


def _document(folder: Path, name: str, max_chars: int | None) -> Document:
    txt, ann = folder / f"{name}.txt", folder / f"{name}.ann"
    if max_chars is not None and txt.stat().st_size > 4 * max_chars + 4:  # UTF-8: at most 4 bytes a character
        raise CorpusError(txt, 1, f"more than the limit of {max_chars:,} characters per text")
    text = decode(txt.read_bytes(), txt, 0)
    if max_chars is not None and len(text) > max_chars:
        raise CorpusError(txt, 1, over_limit("the text", len(text), max_chars))
    if not text:
        raise CorpusError(txt, 1, "an empty text")
    doc = Document(name, [Passage(0, text)], source=str(folder), line=0)
    if not ann.is_file():
        return doc
    first: dict[str, int] = {}  # annotation ID -> its line
    entities: dict[str, Mention] = {}
    others: list[tuple[int, str]] = []
    with open(ann, "rb") as f:
        for lineno, line in read_lines(f, ann, None, ""):
            if not line.strip():
                continue
            fail = partial(CorpusError, ann, lineno)
            ann_id, tab, _ = line.partition("\t")
            if not tab or not ann_id:
                raise fail(f"a malformed line (no tab after an annotation ID): {_short(line)}")
            if ann_id != "*":  # equivalences all share the ID `*`
                if ann_id in first:
                    raise fail(f"duplicate annotation ID {ann_id} (first at line {first[ann_id]})")
                first[ann_id] = lineno
            kind = ann_id[0]
            if kind == "T":
                m = _entity(line, doc, fail)
                entities[ann_id] = m
                place(doc, m, fail)
            elif kind in CHECKS or kind == "N":
                _check(kind, line, fail)
                others.append((lineno, line))
            else:
                raise fail(f"a line of an unknown kind {kind!r} (brat has T, R, E, A, M, N, * and #): {_short(line)}")
    for lineno, line in others:
        score = SCORE_NOTE_RE.fullmatch(line.partition("\t")[2]) if line.startswith("#") else None
        if score and score.group(1) in entities and entities[score.group(1)].score is None:
            entities[score.group(1)].score = to_score(score.group(2), partial(CorpusError, ann, lineno))
        else:
            doc.relations.append({"brat": line})
    return doc


def _entity(line: str, doc: Document, fail) -> Mention:
    parts = line.split("\t", 2)
    head = parts[1].split(" ", 1) if len(parts) == 3 else []
    if len(head) != 2 or not head[0]:
        raise fail(f"a malformed entity line (expected 'T1<TAB>Type START END<TAB>text'): {_short(line)}")
    spans = []
    for loc in head[1].split(";"):
        se = loc.split()
        if len(se) != 2 or not all(OFFSET_RE.fullmatch(x) for x in se):
            raise fail(
                f"a malformed entity line (offsets {head[1]!r}, expected 'START END[;START END]...'): {_short(line)}"
            )
        spans.append((int(se[0]), int(se[1])))
    text = parts[2]
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    if len(spans) == 1:
        held = doc.passages[0].text[start:end]
        if held != text and _one_line(held) == text:
            text = held  # a mention over a line break: brat writes a space for it
    return Mention(start, end, text, head[0], parts[0], tuple(spans) if len(spans) > 1 else ())


def _check(kind: str, line: str, fail) -> None:
    if kind == "N":
        parts = line.split("\t")
        ok = len(parts) in (2, 3) and len(parts[1].split(" ")) == 3
    else:
        try:
            CHECKS[kind](line.rstrip())  # brat may end a relation line with a tab
            ok = True
        except (AssertionError, ValueError, IndexError, KeyError):
            ok = False
    if not ok:
        raise fail(f"a malformed line: {_short(line)}")


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _short(line: str, n: int = 80) -> str:
    return repr(line if len(line) <= n else line[:n] + "...")


class Writer:
    """Writes `ID.txt` and `ID.ann` into a folder (made when missing) for each document."""

    def __init__(self, folder: Path):
        if folder.exists() and not folder.is_dir():
            raise BionerError(f"{folder}: not a folder; brat is written to a folder of .txt and .ann files")
        folder.mkdir(exist_ok=True)
        self.folder = folder
        self.ids: set[str] = set()

    def write(self, doc: Document) -> None:
        def fail(what: str) -> BionerError:
            return BionerError(f"{doc.where()}: cannot be written as brat: {what}")

        if not doc.id or doc.id in (".", "..") or any(c in doc.id for c in "/\\\0") or doc.id != doc.id.strip():
            raise fail("its ID is not a file name")
        if doc.id in self.ids:
            raise fail("a second document with this ID")
        self.ids.add(doc.id)
        text = document_text(doc, "\n")  # passages apart: a line break between them
        kept = [r["brat"] for r in doc.relations if isinstance(r.get("brat"), str) and "\t" in r["brat"]]
        used = {m.id for m in doc.mentions if m.id and TID_RE.fullmatch(m.id)} | {k.partition("\t")[0] for k in kept}
        new_tids, new_notes = fresh_ids(used, "T"), fresh_ids(used, "#")
        given: set[str] = set()
        lines, notes = [], []
        for m in doc.mentions:
            if not m.type or any(c.isspace() for c in m.type):
                raise fail(f"mention {m.start}-{m.end}: its type {m.type!r} is empty or holds a space")
            tid = m.id if m.id and TID_RE.fullmatch(m.id) and m.id not in given else next(new_tids)
            given.add(tid)
            spans = ";".join(f"{s} {e}" for s, e in m.fragments or ((m.start, m.end),))
            lines.append(f"{tid}\t{m.type} {spans}\t{_one_line(m.text)}")
            if m.score is not None:
                notes.append(f"{next(new_notes)}\tAnnotatorNotes {tid}\tscore={format_score(m.score)}")
        with open(self.folder / f"{doc.id}.txt", "w", encoding="utf-8", newline="") as f:
            f.write(text)
        with open(self.folder / f"{doc.id}.ann", "w", encoding="utf-8", newline="") as f:
            f.write("".join(x + "\n" for x in lines + kept + notes))

    def close(self) -> None:
        pass
