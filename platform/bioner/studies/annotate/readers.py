"""Readers of a shard's records: each document, or each bad record as a CorpusError, so that a job
can skip bad records and go on. Parquet and PubMed XML are read here; the formats of `data.formats`
through their readers, resumed after a bad record where the format allows it.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Iterator

from ...data.documents import Document, Passage
from ...data.formats import read_documents
from ...errors import CorpusError, first_line

PARQUET, PUBMED = "parquet", "pubmed"

Record = Document | CorpusError


def records(local: str, path: str, fmt: str, max_chars: int) -> Iterator[Record]:
    """The records of the file at `local`, whose place in messages is `path`."""
    if fmt == PARQUET:
        return _parquet_records(local, path, max_chars)
    if fmt == PUBMED:
        return _pubmed_records(local, path, max_chars)
    return _format_records(local, path, fmt, max_chars)


def _format_records(local: str, path: str, fmt: str, max_chars: int) -> Iterator[Record]:
    """The documents of a `data.formats` file, and each bad record as a CorpusError (its path the shard's).

    The readers stop at a bad record. For the line-based formats reading goes on after it: from a copy
    of the file whose lines up to the end of the bad record are blank (JSON lines and text skip blank
    lines and PubTator takes them as document ends), so line numbers and text IDs stay those of the
    file. Other formats cannot be resumed inside a file: the rest of it is one more bad record."""
    start, tmp = 0, None
    try:
        while True:
            src = local if start == 0 else tmp
            try:
                yield from read_documents(src, fmt, max_chars)
                return
            except CorpusError as e:
                yield CorpusError(path, e.line, e.what)
                try:
                    nxt = _resume_line(src, fmt, e.line)
                    if nxt is not None and nxt > start:
                        if tmp is None:
                            fd, tmp = tempfile.mkstemp(prefix="bioner-resume-", suffix=".txt")
                            os.close(fd)
                        _blank_lines(local, tmp, nxt)
                except (OSError, EOFError):  # a damaged gzip stream: nothing after the bad record can be read
                    nxt = None
                if nxt is None or nxt <= start:
                    if e.line:  # a reader that cannot resume: what follows is not read
                        yield CorpusError(
                            path,
                            e.line,
                            f"the rest of the file after line {e.line} was not read "
                            f"({fmt} cannot be resumed after a bad record)",
                        )
                    return
                start = nxt
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _resume_line(path: str, fmt: str, line: int) -> int | None:
    """The last line of the bad record at `line`: reading goes on after it (None: it cannot)."""
    if line <= 0 or fmt not in ("jsonl", "text", "pubtator"):
        return None
    if fmt != "pubtator":
        return line
    with _open_plain_or_gz(path) as f:  # a PubTator record ends at the first blank line from `line` on
        for n, raw in enumerate(f, 1):
            if n >= line and not raw.strip():
                return n
    return 1 << 62  # the bad record runs to the end of the file


def _blank_lines(src: str, dst: str, upto: int) -> None:
    with _open_plain_or_gz(src) as f, open(dst, "wb") as out:
        for n, raw in enumerate(f, 1):
            out.write(b"\n" if n <= upto else raw)


def _open_plain_or_gz(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


# --------------------------------------------------------------------------- Parquet


def _parquet_records(local: str, where: str, max_chars: int) -> Iterator[Record]:
    """Rows of a Parquet file as documents: `id` and `text` (one passage), or `id` and `passages` (a list
    of {offset, text[, type][, infons]}). The number in a bad record's place is its row (from 1)."""
    import pyarrow.parquet as pq  # lazy (platform/README.md)

    try:
        f = pq.ParquetFile(local)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError ... for a file that is not Parquet
        yield CorpusError(where, 0, f"not a Parquet file ({first_line(e)})")
        return
    names = set(f.schema_arrow.names)
    body = "text" if "text" in names else "passages" if "passages" in names else None
    if "id" not in names or body is None:
        found = ", ".join(sorted(names))
        yield CorpusError(where, 0, f"expected columns id and text (or id and passages), found {found}")
        return
    row = 0
    for batch in f.iter_batches(batch_size=1024, columns=["id", body]):
        for rec in batch.to_pylist():
            row += 1
            yield _parquet_document(rec, body, where, row, max_chars)


def _parquet_document(rec: dict, body: str, where: str, row: int, max_chars: int) -> Record:
    doc_id = rec.get("id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        return CorpusError(where, row, f"id {doc_id!r} is not a non-empty string")
    if body == "text":
        parts = [{"offset": 0, "text": rec.get("text")}]
    else:
        parts = rec.get("passages")
        if not isinstance(parts, list) or not parts:
            return CorpusError(where, row, f"document {doc_id}: passages is not a non-empty list")
    doc = Document(doc_id, [], source=where, line=row)
    end = 0
    for i, p in enumerate(parts, 1):
        text, offset = (p or {}).get("text"), (p or {}).get("offset")
        what = f"document {doc_id}, passage {i}"
        if not isinstance(text, str) or not text:
            return CorpusError(where, row, f"{what}: no text")
        if not isinstance(offset, int) or offset < end:
            return CorpusError(where, row, f"{what}: offset {offset!r} is not a whole number at or after {end}")
        if len(text) > max_chars:
            return CorpusError(
                where,
                row,
                f"{what}: {len(text):,} characters, more than the limit of {max_chars:,} characters per text",
            )
        infons = _infons(p.get("infons"))
        if p.get("type"):
            infons["type"] = str(p["type"])
        doc.passages.append(Passage(offset, text, infons))
        end = offset + len(text)
    return doc


def _infons(value) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):  # a Parquet map arrives as a list of (key, value)
        return {str(k): str(v) for k, v in value}
    return {}


# --------------------------------------------------------------------------- PubMed XML


def _pubmed_records(local: str, where: str, max_chars: int) -> Iterator[Record]:
    """PubMed baseline/update XML, streamed: per PubmedArticle (or PubmedBookArticle), PMID as its ID,
    ArticleTitle as a title passage at offset 0, the AbstractText parts joined by a space as an
    abstract passage at len(title) + 1 (the PubTator layout). Each element is freed once read."""
    from lxml import etree  # lazy (platform/README.md)

    articles = ("PubmedArticle", "PubmedBookArticle")
    with _open_plain_or_gz(local) as f:
        # no entity resolved and no DTD fetched: a baseline file needs neither
        events = etree.iterparse(
            f, events=("end",), tag=articles, resolve_entities=False, load_dtd=False, no_network=True, huge_tree=True
        )
        try:
            for _, elem in events:
                yield _pubmed_document(elem, where, max_chars)
                elem.clear(keep_tail=False)
                parent = elem.getparent()
                while parent is not None and elem.getprevious() is not None:
                    del parent[0]  # the articles already handed out
        except etree.XMLSyntaxError as e:
            yield CorpusError(where, e.lineno or 0, f"not well-formed XML: {e.msg}")
        except (OSError, EOFError) as e:  # a damaged gzip stream
            yield CorpusError(where, 0, f"cannot be read: {e}")


def _text_of(elem) -> str:
    return "".join(elem.itertext()).strip() if elem is not None else ""


def _pubmed_document(elem, where: str, max_chars: int) -> Record:
    line = elem.sourceline or 0
    base = elem.find("MedlineCitation") if elem.tag == "PubmedArticle" else elem.find("BookDocument")
    pmid = _text_of(base.find("PMID")) if base is not None else ""
    if not pmid:
        return CorpusError(where, line, f"a {elem.tag} without a PMID")
    if elem.tag == "PubmedArticle":
        title_el, abstract_el = base.find("Article/ArticleTitle"), base.find("Article/Abstract")
    else:
        title_el = base.find("ArticleTitle") if base.find("ArticleTitle") is not None else base.find("Book/BookTitle")
        abstract_el = base.find("Abstract")
    title = _text_of(title_el)
    parts = [_text_of(a) for a in abstract_el.iterfind("AbstractText")] if abstract_el is not None else []
    abstract = " ".join(p for p in parts if p)
    for what, text in (("title", title), ("abstract", abstract)):
        if len(text) > max_chars:
            return CorpusError(
                where,
                line,
                f"{what} of document {pmid}: {len(text):,} characters, more than the limit "
                f"of {max_chars:,} characters per text",
            )
    doc = Document(pmid, [], source=where, line=line)
    if title:
        doc.passages.append(Passage(0, title, {"type": "title"}))
    if abstract:
        doc.passages.append(Passage(len(title) + 1, abstract, {"type": "abstract"}))
    return doc
