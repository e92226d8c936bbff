"""BioC XML, read one document at a time in bounded memory, written as documents come.

lxml's iterparse is used directly rather than `bioc.biocxml.BioCXMLDocumentReader`, which keeps
every element it has parsed, so memory grows with the file; here each document's elements are
freed once it is read. The writer is `bioc`'s BioCXMLDocumentWriter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import bioc
from bioc.biocxml import BioCXMLDocumentWriter
from lxml import etree

from ...errors import BionerError, CorpusError
from ..documents import Document
from ._common import SeenIds, StreamWriter, open_binary
from .bioc_model import from_document, to_document


def read(path: Path, max_chars: int | None) -> Iterator[Document]:
    seen = SeenIds(path)
    collection = False
    with open_binary(path, "rb") as f:
        # no entity is resolved and no DTD fetched: a corpus file needs neither
        events = etree.iterparse(
            f,
            events=("start", "end"),
            tag=("collection", "document"),
            resolve_entities=False,
            load_dtd=False,
            no_network=True,
            remove_comments=True,
        )
        try:
            for event, elem in events:
                if elem.tag == "collection":
                    collection = True
                    continue
                if not collection:
                    raise CorpusError(
                        path, elem.sourceline or 0, "a <document> outside a <collection>: not a BioC XML file"
                    )
                if event != "end":
                    continue
                line = elem.sourceline or 0
                doc = to_document(_document(elem), path, line, max_chars)
                if seen.new(doc):
                    yield doc
                elem.clear(keep_tail=False)
                parent = elem.getparent()
                while parent is not None and elem.getprevious() is not None:
                    del parent[0]  # the documents already handed out
        except etree.XMLSyntaxError as e:
            line, column = e.position
            what = re.sub(r", line \d+, column \d+$", "", e.msg or "")
            raise CorpusError(path, line or 0, f"not well-formed XML: {what} (column {column})") from None
        except (OSError, EOFError) as e:  # a damaged gzip stream
            raise CorpusError(path, 0, f"cannot be read: {e}") from None
    if not collection:
        raise CorpusError(path, 1, "no <collection> element: not a BioC XML file")


def _document(elem) -> dict:
    return {
        "id": elem.findtext("id"),
        "infons": _infons(elem),
        "passages": [_passage(p) for p in elem.iterfind("passage")],
        "annotations": [_annotation(a) for a in elem.iterfind("annotation")],
        "relations": [_relation(r) for r in elem.iterfind("relation")],
    }


def _passage(elem) -> dict:
    return {
        "offset": elem.findtext("offset"),
        "text": elem.findtext("text"),
        "infons": _infons(elem),
        "_line": elem.sourceline,
        "sentences": [
            {
                "annotations": [_annotation(a) for a in s.iterfind("annotation")],
                "relations": [_relation(r) for r in s.iterfind("relation")],
            }
            for s in elem.iterfind("sentence")
        ],
        "annotations": [_annotation(a) for a in elem.iterfind("annotation")],
        "relations": [_relation(r) for r in elem.iterfind("relation")],
    }


def _annotation(elem) -> dict:
    return {
        "id": elem.get("id"),
        "infons": _infons(elem),
        "text": elem.findtext("text"),
        "_line": elem.sourceline,
        "locations": [{"offset": loc.get("offset"), "length": loc.get("length")} for loc in elem.iterfind("location")],
    }


def _relation(elem) -> dict:
    return {
        "id": elem.get("id"),
        "infons": _infons(elem),
        "nodes": [{"refid": n.get("refid"), "role": n.get("role")} for n in elem.iterfind("node")],
    }


def _infons(elem) -> dict[str, str]:
    return {i.get("key", ""): i.text or "" for i in elem.iterfind("infon")}


class Writer(StreamWriter):
    """An XML declaration and `<collection>` with its source, date and key, then each document as it
    comes (one a line), then `</collection>` on close."""

    def __init__(self, f: BinaryIO, owned: bool):
        super().__init__(f, owned)
        self.ids: set[str] = set()
        self.writer = BioCXMLDocumentWriter(f, encoding="UTF-8")
        info = bioc.BioCCollection()
        info.source = "bioner"
        self.writer.write_collection_info(info)

    def write(self, doc: Document) -> None:
        if doc.id in self.ids:
            raise BionerError(f"{doc.where()}: a second document with this ID")
        self.ids.add(doc.id)
        try:
            self.writer.write_document(from_document(doc))
        except ValueError as e:  # lxml refuses a string XML cannot hold (in an infon, say)
            raise BionerError(f"{doc.where()}: cannot be written as BioC XML: {e}") from None

    def close(self) -> None:
        self.writer.close()
        super().close()
