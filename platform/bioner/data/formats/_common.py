"""What the readers and writers of every format share: opening files (gzip too), lines read with a
bound on their length, and the checks every Document passes before it is handed out."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from ...errors import BionerError, CorpusError
from ..documents import Document, Mention, Passage

BOM = "\ufeff"
INT_RE = re.compile(r"\s*[+-]?\d+\s*")
MAX_GAP = 1_000_000  # characters between two passages that a whole text (brat, text) is padded with


def is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def open_binary(path: Path, mode: str) -> BinaryIO:
    """`path` for binary reading or writing, through gzip when its name ends in `.gz`."""
    return gzip.open(path, mode) if is_gzip(path) else open(path, mode)  # type: ignore[return-value]


class Utf8ToText:
    """A binary stream's `write` onto a text stream (an io.StringIO, say): UTF-8 decoded as it comes,
    a character split between two writes included."""

    def __init__(self, target: TextIO):
        self.target, self.decoder = target, codecs.getincrementaldecoder("utf-8")()

    def write(self, data: bytes) -> int:
        self.target.write(self.decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        self.flush()


def output_stream(target) -> BinaryIO:
    """The binary stream a writer writes to for `target`, an open stream it does not own: a binary
    one itself, a text one's buffer (sys.stdout's), else the text stream through UTF8ToText."""
    if isinstance(target, io.TextIOBase) or hasattr(target, "encoding"):
        target.flush()  # what was written to it before comes first
        buffer = getattr(target, "buffer", None)
        return buffer if buffer is not None else Utf8ToText(target)  # type: ignore[return-value]
    return target


class StreamWriter:
    """A writer onto a binary stream: closed at the end when the writer opened it, else flushed."""

    def __init__(self, f: BinaryIO, owned: bool):
        self.f, self.owned = f, owned

    def close(self) -> None:
        if self.owned:
            self.f.close()
        else:
            self.f.flush()


def over_limit(what: str, n: int, max_chars: int) -> str:
    return f"{what}: {n:,} characters, more than the limit of {max_chars:,} characters per text"


def read_lines(f: BinaryIO, path: Path, cap: int | None, too_long: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of `f`, split at `\\n` only, its `\\r\\n` or `\\n` and a UTF-8
    BOM on line 1 removed. With `cap`, a line of `cap` bytes or more is refused (`too_long`) before
    more of it is read, so a huge line never sits whole in memory."""
    lineno = 0
    while True:
        try:
            raw = f.readline(cap) if cap is not None else f.readline()
        except (OSError, EOFError) as e:  # a damaged or truncated gzip stream
            raise CorpusError(path, lineno + 1, f"cannot be read: {e}") from None
        if not raw:
            return
        lineno += 1
        if cap is not None and len(raw) >= cap and not raw.endswith(b"\n"):
            raise CorpusError(path, lineno, too_long)
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield lineno, decode(raw, path, lineno, first=lineno == 1)


def decode(raw: bytes, path: Path, lineno: int, first: bool = False) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # in a whole file (lineno 0) the message names the line the bad byte is on
        if lineno == 0:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
            raise CorpusError(path, line, f"not UTF-8 text (byte {col + 1} of the line)") from None
        raise CorpusError(path, lineno, f"not UTF-8 text (byte {e.start + 1} of the line)") from None
    return text[1:] if first and text.startswith(BOM) else text


def json_error(e: Exception) -> str:
    """What is wrong with a JSON text, from json.loads's error (a number too long, nesting too deep too)."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} (column {e.colno})"
    if isinstance(e, RecursionError):
        return "not readable JSON: nested too deeply"
    return f"not readable JSON: {e}"


def to_int(value, what: str, fail: Callable[[str], Exception]) -> int:
    """A whole number from a JSON number or a string of digits (XML attributes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and INT_RE.fullmatch(value):
        return int(value)
    raise fail(f"{what} {value!r} is not a whole number")


def to_score(value, fail: Callable[[str], Exception]) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise fail(f"score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise fail(f"score {value!r} is not a finite number")
    return score


def format_score(score: float) -> str:
    return repr(float(score))  # the shortest text that reads back as the same float


class SeenIds:
    """Document IDs met so far in one file, with the line of each. A second document with an ID already
    met is refused, an identical copy too (the NCBI disease corpus's training file holds PMID 8528200
    twice, word for word): an ID names one document, and a copy would count its mentions twice."""

    def __init__(self, path: Path):
        self.path, self.first = path, {}

    def new(self, doc: Document) -> bool:
        """True for a document whose ID is new; a second one with the same ID stops the read."""
        digest = hashlib.blake2b(
            repr((doc.passages, doc.infons, doc.relations)).encode("utf-8", "replace"), digest_size=8
        ).digest()
        if doc.id not in self.first:
            self.first[doc.id] = (doc.line, digest)
            return True
        line, first = self.first[doc.id]
        at = f" (first at line {line})" if line else ""
        same = "an identical copy" if first == digest else "the two documents differ"
        raise CorpusError(self.path, doc.line, f"duplicate document ID {doc.id}{at}, {same}")


def check_passages(doc: Document, path: Path, line: int, max_chars: int | None) -> None:
    """Passages non-empty, within the limit, in offset order and not overlapping."""
    end = 0
    for p in doc.passages:
        where = f"document {doc.id}, passage at offset {p.offset}"
        if p.offset < 0:
            raise CorpusError(path, line, f"{where}: a negative offset")
        if not p.text:
            raise CorpusError(path, line, f"{where}: no text")
        if max_chars is not None and len(p.text) > max_chars:
            raise CorpusError(path, line, over_limit(where, len(p.text), max_chars))
        if not valid_unicode(p.text):  # a lone surrogate, from a JSON escape such as "\ud800"
            raise CorpusError(path, line, f"{where}: not valid Unicode text")
        if p.offset < end:
            raise CorpusError(path, line, f"{where}: overlaps the passage before it, which ends at offset {end}")
        end = p.end


def place(
    doc: Document,
    m: Mention,
    fail: Callable[[str], Exception],
    passage: Passage | None = None,
    given_text: bool = True,
    says: str = "the line says",
) -> None:
    """Check `m` against the document's text and add it to the passage holding it (`passage` when the
    file says which). A contiguous mention's text must be the text at its offsets; a discontinuous
    one's fragments must lie in that passage (its text is kept as the file gives it)."""
    spans = m.fragments or ((m.start, m.end),)
    for s, e in spans:
        if s >= e:
            raise fail(f"offsets {s}-{e}: the start is not before the end")
    last = doc.passages[-1].end if doc.passages else 0
    if m.start < 0 or m.end > last:
        raise fail(f"offsets {m.start}-{m.end} are outside the text of document {doc.id} (offsets 0-{last})")
    holder = doc.passage_at(m.start, m.end)
    if holder is None:
        parts = ", ".join(f"{p.infons.get('type', 'passage')} {p.offset}-{p.end}" for p in doc.passages)
        raise fail(f"offsets {m.start}-{m.end} are not inside one passage of document {doc.id} ({parts})")
    if passage is not None and holder is not passage:
        raise fail(f"offsets {m.start}-{m.end} are outside their passage (offsets {passage.offset}-{passage.end})")
    if not m.fragments:
        held = holder.text[m.start - holder.offset : m.end - holder.offset]
        if not given_text:
            m.text = held
        elif held != m.text:
            raise fail(f"offsets {m.start}-{m.end} hold {held!r} but {says} {m.text!r}")
    elif not given_text:
        m.text = " ".join(holder.text[s - holder.offset : e - holder.offset] for s, e in m.fragments)
    holder.mentions.append(m)


def document_text(doc: Document, gap: str) -> str:
    """The whole text of `doc`: its passages at their offsets, the space between them filled with `gap`."""
    out: list[str] = []
    size = 0
    for p in doc.passages:
        if p.offset < size:
            raise BionerError(f"{doc.where(p.offset)}: passages overlap, so they cannot be written as one text")
        if p.offset - size > MAX_GAP:  # a wrong offset would otherwise fill memory with `gap`
            raise BionerError(
                f"{doc.where(p.offset)}: {p.offset - size:,} characters between passages, "
                f"more than the {MAX_GAP:,} a text written whole may have there"
            )
        out.append(gap * (p.offset - size))
        out.append(p.text)
        size = p.end
    return "".join(out)


def fresh_ids(used: set[str], prefix: str) -> Iterator[str]:
    """`prefix1`, `prefix2`, ... skipping the IDs already in `used`."""
    n = 0
    while True:
        n += 1
        if f"{prefix}{n}" not in used:
            yield f"{prefix}{n}"


def valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
