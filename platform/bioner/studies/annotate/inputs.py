"""The shards of an annotation job: input files found, sized and typed by the driver, and read (checked,
hashed, bad records listed) by a Ray task, one shard at a time.

A shard is one input file. Inputs are local paths, folders (every file below them, hidden ones left
out) and globs, or URIs of any filesystem pyarrow reaches (s3://, gs://, hdfs://; others through
fsspec). Formats are those of `data.formats`, plus Parquet (columns `id` and `text`, or `id` and
`passages`) and PubMed baseline XML, read here. A remote shard is copied to a local temporary file
first, its SHA-256 computed on the way; a local one is hashed in a pass of its own.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...data.documents import Document
from ...data.formats import FORMATS, format_guess_failure, guess_format
from ...errors import BionerError, CorpusError, first_line
from .readers import PARQUET, PUBMED, records

# brat is a folder of file pairs, not a file: an input folder here is a set of shards instead.
INPUT_FORMATS = tuple(f for f in FORMATS if f != "brat") + (PARQUET, PUBMED)
# What `--output-format same` writes for inputs whose format has no writer, or cannot hold mentions.
SAME_FORMAT = {"text": "jsonl", PARQUET: "jsonl", PUBMED: "bioc"}
_EXTENSION = {"jsonl": ".jsonl", "bioc": ".bioc.xml"}
_GLOB_CHARS = set("*?[")
_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class Shard:
    """One input file: `path` is absolute (local) or a URI; `index` numbers its outputs."""

    index: int
    path: str
    size: int
    format: str

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BadRecord:
    file: str
    line: int
    reason: str

    def message(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


# --------------------------------------------------------------------------- filesystems


def is_uri(path: str) -> bool:
    """A path for a pyarrow filesystem (file:// included: a local folder read through the same code as
    an object store's)."""
    return "://" in path


def filesystem(uri: str):
    """(pyarrow filesystem, path in it) of a URI: pyarrow's own schemes, else fsspec's."""
    import pyarrow.fs as pafs  # lazy (platform/README.md)

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        pa_error = e
    try:
        import fsspec  # lazy (platform/README.md)
        from pyarrow.fs import FSSpecHandler, PyFileSystem  # lazy (platform/README.md)

        fs, path = fsspec.core.url_to_fs(uri)
        return PyFileSystem(FSSpecHandler(fs)), path
    except Exception as e:  # fsspec raises ValueError, ImportError or its own types for an unknown scheme
        raise BionerError(
            f"{uri}: no filesystem for this URI ({first_line(pa_error)}; fsspec: {first_line(e)})"
        ) from None


def _with_scheme(uri: str, path: str) -> str:
    """The URI of `path`, a path that `filesystem(uri)` listed."""
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path.lstrip('/')}" if scheme != "file" else f"file://{path}"


# --------------------------------------------------------------------------- finding shards


def find_shards(inputs: list[str], fmt: str | None) -> list[Shard]:
    """Every input file, in the order given (a folder's and a glob's files sorted), each once, with its
    size and format. Refuses a missing input, a folder or glob without files, a file whose format
    cannot be told, and an input whose files are all empty."""
    if fmt is not None and fmt not in INPUT_FORMATS:
        raise BionerError(f"--format {fmt}: expected one of {', '.join(INPUT_FORMATS)}")
    if not inputs:
        raise BionerError("no --input: give files, folders or globs of documents")
    found: dict[str, int] = {}
    for given in inputs:
        files = _remote_files(given) if is_uri(given) else _local_files(given)
        for path, size in files:
            found.setdefault(path, size)
    shards = [Shard(i, path, size, fmt or detect_format(path)) for i, (path, size) in enumerate(found.items())]
    if not any(s.size for s in shards):
        what = "file is" if len(shards) == 1 else f"{len(shards)} files are"
        raise BionerError(f"--input {' '.join(inputs)}: empty input (the {what} empty)")
    return shards


def _local_files(given: str) -> list[tuple[str, int]]:
    path = Path(given).expanduser()
    if _GLOB_CHARS & set(given):
        matches = sorted(glob.glob(str(path), recursive=True))
        files = [f for m in matches for f in (_folder_files(Path(m)) if Path(m).is_dir() else [Path(m)])]
        if not files:
            raise BionerError(f"--input {given}: no file matches")
    elif path.is_dir():
        files = _folder_files(path)
        if not files:
            raise BionerError(f"--input {given}: an empty folder")
    elif path.exists():
        files = [path]
    else:
        raise BionerError(f"--input {given}: not found")
    out = []
    for f in files:
        try:
            out.append((str(f.resolve()), f.stat().st_size))
        except OSError as e:
            raise BionerError(f"--input {f}: cannot be read ({e.strerror})") from None
    return out


def _folder_files(folder: Path) -> list[Path]:
    """Regular files below `folder`, hidden files and folders (`.x`) left out, sorted."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return out


def _remote_files(given: str) -> list[tuple[str, int]]:
    from pyarrow.fs import FileSelector, FileType  # lazy (platform/README.md)

    fs, path = filesystem(given)
    pattern = None
    if _GLOB_CHARS & set(path):
        parts = path.split("/")
        first = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p))
        pattern, path = path, "/".join(parts[:first])
    try:
        info = fs.get_file_info(path)
        if info.type == FileType.NotFound:
            raise BionerError(f"--input {given}: not found")
        infos = [info] if info.type == FileType.File else fs.get_file_info(FileSelector(path, recursive=True))
    except OSError as e:
        raise BionerError(f"--input {given}: cannot be listed ({first_line(e)})") from None
    import fnmatch  # lazy (platform/README.md)

    files = sorted(
        (i for i in infos if i.type == FileType.File and not i.base_name.startswith(".")), key=lambda i: i.path
    )
    if pattern is not None:
        files = [i for i in files if fnmatch.fnmatchcase(i.path, pattern)]
    if not files:
        raise BionerError(f"--input {given}: no file matches" if pattern else f"--input {given}: an empty folder")
    return [(_with_scheme(given, i.path), int(i.size or 0)) for i in files]


# --------------------------------------------------------------------------- formats


def detect_format(path: str) -> str:
    """The format of a file from its name, and for XML from its first bytes (PubMed or BioC)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    base = name.removesuffix(".gz")
    if base.endswith(".parquet"):
        return PARQUET
    if base.endswith(".xml"):
        if base.startswith("pubmed") or _looks_like_pubmed(path):
            return PUBMED
        return "bioc"
    fmt = guess_format(name)  # by name only: a local folder is never a shard here
    if fmt is None or fmt == "brat":
        raise BionerError(f"--input {format_guess_failure(path)}; --format takes {', '.join(INPUT_FORMATS)}")
    return fmt


def _looks_like_pubmed(path: str) -> bool:
    try:
        with _open_input(path) as f:
            head = f.read(_SNIFF_BYTES)
    except (OSError, EOFError, BionerError):
        return False  # unreadable here: the reader says why, with the file's name
    return b"<PubmedArticleSet" in head or b"pubmed_" in head


@contextlib.contextmanager
def _open_input(path: str):
    """A binary stream of a shard's content (decompressed when its name ends in .gz)."""
    if is_uri(path):
        fs, p = filesystem(path)
        raw = fs.open_input_stream(p, compression=None)
    else:
        raw = open(path, "rb")
    with raw:
        if path.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as f:
                yield f
        else:
            yield raw


# --------------------------------------------------------------------------- reading a shard


@dataclass
class ShardRead:
    """What a Ray task hands on for one shard: its documents, or why it stopped."""

    documents: list[Document]
    sha256: str
    bad: list[BadRecord]
    fatal: str | None = None


def read_shard(shard: Shard, max_chars: int, max_errors: int | None) -> ShardRead:
    """The shard's documents, checked (a document over `max_chars` in a passage is a bad record). With
    `max_errors` None the first bad record stops it (`fatal`); else bad records are left out and listed,
    until there are more than `max_errors` of them."""
    bad: list[BadRecord] = []
    try:
        with _local_copy(shard) as (local, sha256):
            try:
                return _checked(records(local, shard.path, shard.format, max_chars), shard, sha256, max_errors, bad)
            except BionerError as e:  # the file itself (unreadable): no record to skip
                return ShardRead([], sha256, bad, str(e).replace(local, shard.path))
    except BionerError as e:
        return ShardRead([], "", bad, str(e))
    except OSError as e:  # a download that failed
        return ShardRead([], "", bad, f"{shard.path}: cannot be read ({first_line(e)})")


def _checked(items, shard: Shard, sha256: str, max_errors: int | None, bad: list[BadRecord]) -> ShardRead:
    docs: list[Document] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, Document) and item.id in seen:  # across a resumed read (readers check within one)
            item = CorpusError(shard.path, item.line, f"duplicate document ID {item.id}")
        if isinstance(item, CorpusError):
            bad.append(BadRecord(shard.path, item.line, item.what))
            if max_errors is None or len(bad) > max_errors:
                return ShardRead([], sha256, bad, bad[-1].message())
            continue
        seen.add(item.id)
        item.source = shard.path
        docs.append(item)
    return ShardRead(docs, sha256, bad)


@contextlib.contextmanager
def _local_copy(shard: Shard) -> Iterator[tuple[str, str]]:
    """(a local path of the shard's bytes, their SHA-256)."""
    h = hashlib.sha256()
    if not is_uri(shard.path):
        local = shard.path
        try:
            with open(local, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as e:
            raise BionerError(f"{shard.path}: cannot be read ({e.strerror})") from None
        yield local, h.hexdigest()
        return
    fs, p = filesystem(shard.path)
    with tempfile.TemporaryDirectory(prefix="bioner-shard-") as tmp:
        local = os.path.join(tmp, shard.name)  # the name keeps .gz, which the readers go by
        with fs.open_input_stream(p, compression=None) as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
        yield local, h.hexdigest()


# --------------------------------------------------------------------------- output names


def same_format(fmt: str) -> str:
    """The format `--output-format same` writes a shard of format `fmt` in."""
    return SAME_FORMAT.get(fmt, fmt)


def documents_names(shards: list[Shard]) -> dict[int, str]:
    """The file name under `documents/` of each shard: its input's name (the extension changed when the
    output format differs), prefixed by the shard number where two inputs share a name."""
    names = {}
    for s in shards:
        out = same_format(s.format)
        name = s.name
        if out != s.format:
            gz = name.lower().endswith(".gz")
            stem = name[:-3] if gz else name
            stem = stem.rsplit(".", 1)[0] if "." in stem else stem
            name = stem + _EXTENSION[out] + (".gz" if gz else "")
        names[s.index] = name
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {i: (n if counts[n] == 1 else f"shard-{i:05d}-{n}") for i, n in names.items()}
