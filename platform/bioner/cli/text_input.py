"""`bioner predict --input`: texts one per line from a file, a pipe, a device or stdin, streamed.

A record is a line: lines end at `\n` (or `\r\n`) only, never at the other characters that
Python's `str.splitlines` also breaks on (form feed, U+2028, U+001D ...), so output records line
up with input lines. Lines are read one at a time with a bound on their length, so memory stays
bounded whatever the input's size.
"""

from __future__ import annotations

import codecs
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import BionerError
from ..infer.text import MAX_TEXT_CHARS_ENV

STDIN = "-"


def _what(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a file"


def lines(f: BinaryIO, where: str, max_chars: int) -> Iterator[str]:
    """The lines of a binary stream as text, split at `\n` only, each checked: UTF-8, at most
    `max_chars` characters. A line is never read whole beyond that bound. A UTF-8 byte-order mark
    that starts the stream is dropped."""
    cap = 4 * max_chars + 2  # UTF-8 takes at most 4 bytes a character, plus \r\n
    lineno = 0
    while True:
        raw = f.readline(cap)
        if not raw:
            return
        lineno += 1
        if not raw.endswith(b"\n") and len(raw) >= cap:
            raise BionerError(
                f"--input {where}:{lineno}: more than the limit of {max_chars:,} characters per text "
                f"(${MAX_TEXT_CHARS_ENV})"
            )
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if lineno == 1 and line.startswith(codecs.BOM_UTF8):  # an editor's mark, not text: offsets start after it
            line = line[len(codecs.BOM_UTF8) :]
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BionerError(f"--input {where}: not UTF-8 (line {lineno}, byte {e.start + 1})") from None
        if len(text) > max_chars:
            raise BionerError(
                f"--input {where}:{lineno}: {len(text):,} characters, more than the limit of {max_chars:,} "
                f"per text (${MAX_TEXT_CHARS_ENV})"
            )
        yield text


def open_input(path: Path, max_chars: int) -> tuple[Iterator[str], str | None]:
    """(the lines of --input, None; or an empty iterator and what the input is when it has no line).

    A regular file is checked whole first (UTF-8, line lengths), so that a bad line stops the
    command before any output; a pipe or a device is read as it comes, its first line here,
    before the model loads."""
    where = str(path)
    if where == STDIN:
        return _peeked(lines(sys.stdin.buffer, STDIN, max_chars), "stdin")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BionerError(f"--input {where}: file not found") from None
    except OSError as e:
        raise BionerError(f"--input {where}: cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise BionerError(f"--input {where}: is a directory, expected a text file with one text per line")
    try:
        f = open(path, "rb")  # closed by the generators below
    except OSError as e:
        raise BionerError(f"--input {where}: cannot be read ({e.strerror})") from None
    if stat.S_ISREG(mode):
        with f:
            if not any(True for _ in lines(f, where, max_chars)):
                return iter(()), "an empty file"
        return _closing(path, where, max_chars), None
    return _peeked(_closing_stream(f, where, max_chars), f"{_what(mode)} that gave no lines")


def _closing(path: Path, where: str, max_chars: int) -> Iterator[str]:
    with open(path, "rb") as f:
        yield from lines(f, where, max_chars)


def _closing_stream(f: BinaryIO, where: str, max_chars: int) -> Iterator[str]:
    with f:
        yield from lines(f, where, max_chars)


def _peeked(it: Iterator[str], empty: str) -> tuple[Iterator[str], str | None]:
    first = next(it, None)
    if first is None:
        return iter(()), empty
    return _prepend(first, it), None


def _prepend(first: str, rest: Iterable[str]) -> Iterator[str]:
    yield first
    yield from rest


def chunks(texts: Iterable[str], max_texts: int = 256, max_chars: int = 1_000_000) -> Iterator[list[str]]:
    """Groups of texts for one tagging call each: at most `max_texts` texts and, unless a single
    text is longer, `max_chars` characters. Output is written after each group."""
    group: list[str] = []
    size = 0
    for t in texts:
        if group and (len(group) >= max_texts or size + len(t) > max_chars):
            yield group
            group, size = [], 0
        group.append(t)
        size += len(t)
    if group:
        yield group
