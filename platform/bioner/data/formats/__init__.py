"""Corpus and prediction files: read as Documents one at a time, written as they come.

Formats (`FORMATS`): `pubtator`, `bioc` (BioC XML), `bioc-json`, `brat` (a folder of .txt/.ann),
`jsonl` (one JSON document a line) and `text` (one document a line). A file whose name ends in
`.gz` is read and written through gzip. Every reader refuses a malformed file with a CorpusError
(`FILE:LINE: what`), and checks that each mention's text is the document's text at its offsets;
`max_chars` bounds every passage (None: no bound). Each writer writes what its format can hold;
relations are written by the format they were read from (a PubTator relation line, a brat line, a
BioC relation; JSON lines keeps any) and left out by the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from ...errors import BionerError
from ..documents import Document
from . import bioc_json, bioc_xml, brat, jsonl, pubtator, text
from ._common import open_binary, output_stream

FORMATS = ("pubtator", "bioc", "bioc-json", "brat", "jsonl", "text")
_MODULES = {"pubtator": pubtator, "bioc": bioc_xml, "bioc-json": bioc_json, "brat": brat, "jsonl": jsonl, "text": text}
# name endings, each before any shorter one it ends with, and the format each means
_SUFFIXES = (
    (".pubtator.txt", "pubtator"),
    (".bioc.xml", "bioc"),
    (".bioc.json", "bioc-json"),
    (".bioc.jsonl", "bioc-json"),
    (".pubtator", "pubtator"),
    (".xml", "bioc"),
    (".bioc", "bioc"),
    (".json", "bioc-json"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
)

__all__ = ["FORMATS", "DocumentWriter", "format_guess_failure", "guess_format", "open_writer", "read_documents"]


def guess_format(path: str | Path) -> str | None:
    """The format a file's name says (an existing folder: brat), or None: `.txt` is None, as both
    plain text and PubTator files are named so, and so is any other ending not listed here."""
    path = Path(path)
    if path.is_dir():
        return "brat"
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def format_guess_failure(path: str | Path) -> str:
    """Why guess_format(path) is None, for a message that asks for the format by name."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        return (
            f"{path}: a .txt file may be plain text (one document a line) or PubTator; "
            "name its format ('text' or 'pubtator')"
        )
    return f"{path}: its format cannot be told from its name; name it (one of {', '.join(FORMATS)})"


def _module(fmt: str):
    if fmt not in _MODULES:
        raise BionerError(f"unknown document format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _MODULES[fmt]


def read_documents(path: str | Path, fmt: str, max_chars: int | None = None) -> Iterator[Document]:
    """The documents of `path` in format `fmt`, read one at a time (a BioC JSON collection is read whole
    first, as it is one JSON value; every other format in bounded memory). Each has `source=str(path)`
    and `line`, the line it starts on (0 when not known: brat). A missing file is refused here; a
    malformed one when its first bad line is reached."""
    module = _module(fmt)
    path = Path(path)
    if not path.exists():
        raise BionerError(f"{path}: not found")
    if fmt == "brat":
        if not path.is_dir():
            raise BionerError(f"{path}: not a folder; brat is read from a folder of .txt and .ann files")
    elif path.is_dir():
        raise BionerError(f"{path}: a folder; {fmt} is read from a file (only brat is a folder)")
    else:
        try:
            open(path, "rb").close()
        except OSError as e:
            raise BionerError(f"{path}: cannot be read ({e.strerror})") from None
    return module.read(path, max_chars)


class _Writer(Protocol):
    def write(self, doc: Document) -> None: ...

    def close(self) -> None: ...


class DocumentWriter:
    """Writes documents to a file (a folder for brat) as they come; a context manager that finishes
    the file (closing elements, closing brackets) on exit."""

    def __init__(self, path: Path, fmt: str, writer: _Writer):
        self.path, self.format, self._writer = path, fmt, writer
        self.count = 0  # documents written
        self._closed = False

    def write(self, doc: Document) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: written to after it was closed")
        self._writer.write(doc)
        self.count += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()

    def __enter__(self) -> DocumentWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(path: str | Path | IO, fmt: str) -> DocumentWriter:
    """A writer of format `fmt` to `path`: a file (gzip when its name ends in `.gz`), for brat a folder
    (made when missing, its parent must exist), or an open stream, binary or text (`sys.stdout`),
    which is flushed but left open at the end."""
    module = _module(fmt)
    if hasattr(path, "write"):
        if fmt == "brat":
            raise BionerError("brat is written to a folder of .txt and .ann files, not to a stream")
        name = Path(str(getattr(path, "name", "<stream>")))
        return DocumentWriter(name, fmt, module.Writer(output_stream(path), False))
    path = Path(path)  # type: ignore[arg-type]
    if fmt != "brat" and path.is_dir():
        raise BionerError(f"{path}: a folder; {fmt} is written to a file (only brat is a folder)")
    try:
        if fmt == "brat":
            return DocumentWriter(path, fmt, brat.Writer(path))
        f = open_binary(path, "wb")
    except OSError as e:
        raise BionerError(f"{path}: cannot be written ({e.strerror or e})") from None
    try:
        return DocumentWriter(path, fmt, module.Writer(f, True))
    except BaseException:
        f.close()
        raise
