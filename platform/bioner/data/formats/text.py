"""Plain text: one document a line (lines end at `\\n` or `\\r\\n` only), its ID the line number; empty
lines are skipped, keeping the numbering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ...errors import BionerError, CorpusError
from ..documents import Document, Passage
from ._common import StreamWriter, document_text, open_binary, over_limit, read_lines


def read(path: Path, max_chars: int | None) -> Iterator[Document]:
    cap = None if max_chars is None else 4 * max_chars + 2  # UTF-8: at most 4 bytes a character, then \r\n
    too_long = f"more than the limit of {max_chars:,} characters per text" if max_chars else ""
    with open_binary(path, "rb") as f:
        for lineno, line in read_lines(f, path, cap, too_long):
            if not line:
                continue
            if max_chars is not None and len(line) > max_chars:
                raise CorpusError(path, lineno, over_limit("the line", len(line), max_chars))
            yield Document(str(lineno), [Passage(0, line)], source=str(path), line=lineno)


class Writer(StreamWriter):
    """Writes each document's text on a line (passages apart: a space between them). Mentions cannot
    be written here (JSON lines can hold them)."""

    def write(self, doc: Document) -> None:
        if doc.mentions:
            raise ValueError(f"{doc.where()}: the text format cannot hold mentions; write JSON lines instead")
        text = document_text(doc, " ")
        if "\n" in text or "\r" in text:
            raise BionerError(f"{doc.where()}: holds a line break, so it cannot be written as one line of text")
        if not text:
            raise BionerError(f"{doc.where()}: an empty text, which a text file cannot hold (empty lines are skipped)")
        self.f.write(text.encode("utf-8") + b"\n")
