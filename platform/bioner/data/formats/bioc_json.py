"""BioC JSON: a collection object (`{"source", "date", "key", "infons", "documents": [...]}`), or BioC
JSON lines (one document object a line, as `bioc.biocjson.iterwriter` writes).

A collection is one JSON value, so its file is read whole (its documents are then converted one at a
time); JSON lines are read a line at a time. The writer streams: the collection's head, then each
document on its line as it comes, then the closing `]}`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bioc.biocjson import toJSON

from ...errors import BionerError, CorpusError
from ..documents import Document
from ._common import BOM, SeenIds, StreamWriter, decode, json_error, open_binary, read_lines
from .bioc_model import from_document, to_document
from .jsonl import line_cap


def read(path: Path, max_chars: int | None) -> Iterator[Document]:
    seen = SeenIds(path)
    with open_binary(path, "rb") as f:
        try:
            first = f.readline()
        except (OSError, EOFError) as e:
            raise CorpusError(path, 1, f"cannot be read: {e}") from None
        head = decode(first.rstrip(b"\r\n"), path, 1, first=True)
        obj = _json_or_none(head)
        if isinstance(obj, dict) and "passages" in obj and "documents" not in obj:
            too_long = f"a line longer than the limit for {max_chars:,} characters per text" if max_chars else ""
            rest = ((n + 1, text) for n, text in read_lines(f, path, line_cap(max_chars), too_long))
            for lineno, line in itertools.chain([(1, head)], rest):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except (ValueError, RecursionError) as e:
                    raise CorpusError(path, lineno, json_error(e)) from None
                doc = to_document(d, path, lineno, max_chars)
                if seen.new(doc):
                    yield doc
            return
        try:
            rest_bytes = f.read()
        except (OSError, EOFError) as e:
            raise CorpusError(path, 0, f"cannot be read: {e}") from None
    text = decode(first + rest_bytes, path, 0)
    for lineno, d in _collection_documents(text.removeprefix(BOM), path):
        doc = to_document(d, path, lineno, max_chars)
        if seen.new(doc):
            yield doc


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _collection_documents(text: str, path: Path) -> Iterator[tuple[int, dict]]:
    """(line, document object) for each document of a BioC JSON collection, in order, with the line
    each starts on (json.loads would give the objects but not where they are)."""
    decoder = json.JSONDecoder()
    pos, line = 0, 1

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_of(i: int) -> int:
        nonlocal pos, line
        line += text.count("\n", pos, i)
        pos = i
        return line

    def expect(i: int, chars: str) -> tuple[str, int]:
        i = skip(i)
        if i >= len(text) or text[i] not in chars:
            found = repr(text[i]) if i < len(text) else "the end of the file"
            raise CorpusError(
                path, line_of(i), f"not a BioC JSON collection: expected {' or '.join(map(repr, chars))}, found {found}"
            )
        return text[i], i + 1

    def value(i: int):
        try:
            return decoder.raw_decode(text, skip(i))
        except json.JSONDecodeError as e:
            raise CorpusError(path, e.lineno, json_error(e)) from None
        except (ValueError, RecursionError) as e:
            raise CorpusError(path, line_of(skip(i)), json_error(e)) from None

    _, i = expect(0, "{")
    found = False
    c, j = expect(i, '"}')
    if c == "}":
        i = j
    while c != "}":
        key, i = value(i)
        _, i = expect(i, ":")
        if key == "documents":
            found = True
            _, i = expect(i, "[")
            c, j = expect(i, "]{")
            if c == "]":
                i = j
            while c != "]":
                start = skip(i)
                d, i = value(start)
                yield line_of(start), d
                c, i = expect(i, ",]")
        else:
            _, i = value(i)
        c, i = expect(i, ",}")
    if skip(i) < len(text):
        raise CorpusError(path, line_of(skip(i)), "not a BioC JSON collection: more after its closing '}'")
    if not found:
        raise CorpusError(path, 1, 'not a BioC JSON collection: no "documents"')


class Writer(StreamWriter):
    def __init__(self, f: BinaryIO, owned: bool):
        super().__init__(f, owned)
        self.ids: set[str] = set()
        self.count = 0
        head = {"source": "bioner", "date": time.strftime("%Y-%m-%d"), "key": "", "version": "1.0", "infons": {}}
        self.f.write((json.dumps(head)[:-1] + ', "documents": [\n').encode("utf-8"))

    def write(self, doc: Document) -> None:
        if doc.id in self.ids:
            raise BionerError(f"{doc.where()}: a second document with this ID")
        self.ids.add(doc.id)
        text = json.dumps(toJSON(from_document(doc, xml=False)), ensure_ascii=False)
        self.f.write(((",\n" if self.count else "") + text).encode("utf-8"))
        self.count += 1

    def close(self) -> None:
        self.f.write(b"\n]}\n")
        super().close()
