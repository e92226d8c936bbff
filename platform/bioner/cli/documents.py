"""`bioner predict --format`: documents read, tagged sentence by sentence, and written back in their format.

The input is read twice when it is a regular file: once to check every document (a bad one stops the
command before any output) and count them for the progress bar, once to tag; either pass holds one
group of documents at a time, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from ..data.documents import Document
from ..data.formats import FORMATS, guess_format, open_writer, read_documents
from ..errors import BionerError
from ..infer.documents import annotate
from ..infer.tagger import Tagger

# Formats whose writer takes a stream: the others need a path (brat writes a folder).
STREAM_FORMATS = ("pubtator", "bioc", "bioc-json", "jsonl")
FORMAT_HELP = (
    f"Read --input as documents: {', '.join(FORMATS)} (bioc is BioC XML; brat is a folder of .txt/.ann pairs; "
    "text is one document per line, written back as jsonl). Default: from --input's extension where it is "
    "unambiguous, else one text per line as without --format."
)


def document_format(input_: Path | None, fmt: str | None) -> str | None:
    """The documents format of this prediction, or None for today's one-text-per-line path."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise BionerError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        if input_ is None:
            raise BionerError(f"--format {fmt}: give the documents with --input FILE")
        return fmt
    if input_ is None or str(input_) == "-":
        return None
    if input_.is_dir() and not any(input_.glob("*.ann")):
        return None  # not a brat folder: the text path says what it is
    return guess_format(input_)


def check_output(output: Path | None, fmt: str) -> None:
    """Refuse an output that cannot be written before the model loads."""
    out_fmt = "jsonl" if fmt == "text" else fmt
    if output is None:
        if out_fmt not in STREAM_FORMATS:
            raise BionerError(f"--format {fmt}: give --output DIR (brat writes a folder of .txt/.ann pairs)")
        return
    parent = output.parent if out_fmt != "brat" else output
    if out_fmt == "brat":
        if output.exists() and not output.is_dir():
            raise BionerError(f"--output {output}: exists and is not a folder (brat writes a folder)")
        parent = output.parent
    if not parent.is_dir():
        raise BionerError(f"--output {output}: folder {parent} does not exist")
    if output.is_dir() and out_fmt != "brat":
        raise BionerError(f"--output {output}: is a folder; {out_fmt} is written to a file")


def count_documents(path: Path, fmt: str, max_chars: int) -> int:
    """Every document read and checked once (nothing is written before a bad one stops the command)."""
    n = sum(1 for _ in read_documents(path, fmt, max_chars))
    if not n:
        raise BionerError(f"--input {path}: no documents in it")
    return n


def groups(docs: Iterable[Document], max_docs: int = 64, max_chars: int = 500_000) -> Iterator[list[Document]]:
    """Documents in groups for one tagging call each, so that sentences of several documents share batches."""
    group: list[Document] = []
    size = 0
    for d in docs:
        n = sum(len(p.text) for p in d.passages)
        if group and (len(group) >= max_docs or size + n > max_chars):
            yield group
            group, size = [], 0
        group.append(d)
        size += n
    if group:
        yield group


def predict_documents(
    tagger: Tagger,
    input_: Path,
    fmt: str,
    output: Path | None,
    types: list[str] | None,
    keep: bool,
    max_chars: int,
    total: int | None,
) -> int:
    """Tag every document of `input_` and write it with its mentions; returns the number of documents."""
    out_fmt = "jsonl" if fmt == "text" else fmt
    n = 0
    with (
        open_writer(output if output is not None else sys.stdout, out_fmt) as writer,
        tqdm(total=total, desc="documents", unit="doc", disable=None) as bar,
    ):  # shown on a terminal
        for group in groups(read_documents(input_, fmt, max_chars)):
            for d in annotate(tagger, group, types=types, keep=keep):
                writer.write(d)
            n += len(group)
            bar.update(len(group))
    return n


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False
