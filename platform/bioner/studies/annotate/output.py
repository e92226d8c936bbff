"""The output folder of an annotation job, local or on any pyarrow filesystem.

    DIR/manifest.json                  the job: identity, model, status, totals
    DIR/mentions/shard-NNNNN.parquet   one row per mention (MENTION_SCHEMA)
    DIR/documents/<input file name>    with --output-format same: the documents with their mentions
    DIR/_shards/shard-NNNNN.json       the shard's marker: written last, it says the shard is done
    DIR/errors.jsonl                   with --max-errors: every bad record (file, line, reason)

Every file appears whole: a local one is written under a hidden temporary name and renamed; on an
object store a file is created whole when its upload ends. Parquet readers (pyarrow.dataset, Spark)
skip names that start with `.` or `_`, so neither the temporary files nor the markers are read as data.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from ...data.documents import Document
from ...errors import BionerError, first_line
from .inputs import filesystem, is_uri

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
MENTIONS, DOCUMENTS, SHARDS = "mentions", "documents", "_shards"
OURS = (MANIFEST, ERRORS, MENTIONS, DOCUMENTS, SHARDS)
TMP_PREFIX = ".tmp-"


def mention_schema():
    import pyarrow as pa  # lazy (platform/README.md)

    return pa.schema(
        [
            ("doc_id", pa.string()),
            ("passage", pa.int32()),
            ("passage_type", pa.string()),
            ("start", pa.int64()),
            ("end", pa.int64()),
            ("text", pa.string()),
            ("type", pa.string()),
            ("score", pa.float64()),
            ("source_file", pa.string()),
        ]
    )


def mention_table(docs: list[Document], source_file: str):
    """One row per mention of `docs`, in document, passage and offset order."""
    import pyarrow as pa  # lazy (platform/README.md)

    cols: dict[str, list] = {name: [] for name in mention_schema().names}
    for d in docs:
        for i, p in enumerate(d.passages):
            for m in p.mentions:
                cols["doc_id"].append(d.id)
                cols["passage"].append(i)
                cols["passage_type"].append(p.infons.get("type"))
                cols["start"].append(m.start)
                cols["end"].append(m.end)
                cols["text"].append(m.text)
                cols["type"].append(m.type)
                cols["score"].append(m.score)
    cols["source_file"] = [source_file] * len(cols["doc_id"])
    return pa.table(cols, schema=mention_schema())


def marker_name(index: int) -> str:
    return f"{SHARDS}/shard-{index:05d}.json"


def mentions_name(index: int) -> str:
    return f"{MENTIONS}/shard-{index:05d}.parquet"


class OutputDir:
    """The job's folder: `uri` a local path or a URI. Picklable (Ray tasks and actors write to it)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.local = not is_uri(uri)
        if self.local:
            self.root = str(Path(uri).expanduser().resolve())
        else:
            self.root = filesystem(uri)[1].rstrip("/")
        self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            self._fs = filesystem(self.uri)[0]
        return self._fs

    def __getstate__(self):
        return {"uri": self.uri, "local": self.local, "root": self.root, "_fs": None}

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def display(self, name: str = "") -> str:
        base = self.root if self.local else self.uri.rstrip("/")
        return f"{base}/{name}" if name else base

    # ---------------------------------------------------------------- reading

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            if self.local:
                return Path(self.path(name)).read_text(encoding="utf-8")
            with self.fs.open_input_stream(self.path(name), compression=None) as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            if not self.local and "not found" in str(e).lower():  # pyarrow's S3 raises OSError for a missing key
                return None
            raise BionerError(f"{self.display(name)}: cannot be read ({first_line(e)})") from None

    def list(self, folder: str, hidden: bool = False) -> list[str]:
        """Names of the files in `folder` (none when it does not exist), hidden ones (temporary) left out."""
        if self.local:
            d = Path(self.path(folder))
            names = [p.name for p in d.iterdir() if p.is_file()] if d.is_dir() else []
        else:
            from pyarrow.fs import FileSelector, FileType  # lazy (platform/README.md)

            infos = self.fs.get_file_info(FileSelector(self.path(folder), allow_not_found=True))
            names = [i.base_name for i in infos if i.type == FileType.File]
        return sorted(n for n in names if hidden or not n.startswith("."))

    def holds_ours(self) -> list[str]:
        """Which of the job's names the folder holds already."""
        if self.local:
            return [n for n in OURS if os.path.exists(self.path(n))]
        from pyarrow.fs import FileType  # lazy (platform/README.md)

        infos = self.fs.get_file_info([self.path(n) for n in OURS])
        return [n for n, i in zip(OURS, infos, strict=True) if i.type != FileType.NotFound]

    # ---------------------------------------------------------------- writing

    def prepare(self, data: str) -> None:
        """Create the folder, its `data` subfolder (mentions or documents) and the markers', and prove it
        writable, before any work starts."""
        try:
            if self.local:
                for sub in (data, SHARDS):
                    Path(self.path(sub)).mkdir(parents=True, exist_ok=True)
                self.write_bytes(".write-test", b"0")
                os.unlink(self.path(".write-test"))
            else:
                for sub in (data, SHARDS):
                    self.fs.create_dir(self.path(sub), recursive=True)
        except OSError as e:
            raise BionerError(f"--output {self.display()}: not writable ({first_line(e)})") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        self.write_with(name, lambda f: f.write(data))

    def write_json(self, name: str, obj) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))

    def write_with(self, name: str, write: Callable[[io.RawIOBase], object]) -> None:
        """`write(f)` into a binary stream that becomes `name` whole, or not at all."""
        target = self.path(name)
        if not self.local:
            renames = self._renames()
            tmp = _temporary(target) if renames else target
            with self.fs.open_output_stream(tmp, compression=None) as f:  # the bytes as given (.gz named)
                write(f)
            if renames:
                self.fs.move(tmp, target)
            return
        tmp = _temporary(target)
        try:
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_file(self, name: str, make: Callable[[str], object], suffix: str) -> None:
        """A file that `make(path)` writes to a local path (a format's writer), placed as `name` whole."""
        if self.local:
            tmp = _temporary(self.path(name))
            try:
                make(tmp)
                os.replace(tmp, self.path(name))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        with tempfile.TemporaryDirectory(prefix="bioner-out-") as d:
            local = os.path.join(d, "out" + suffix)
            make(local)
            with open(local, "rb") as src:
                self.write_with(name, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))

    def _renames(self) -> bool:
        """Whether a file is written under a temporary name and renamed: on a local filesystem (an object
        store creates an object whole when its upload ends, and its renames are copies)."""
        from pyarrow.fs import LocalFileSystem  # lazy (platform/README.md)

        return isinstance(self.fs, LocalFileSystem)

    def remove_ours(self) -> None:
        """Delete what an earlier job wrote here (--overwrite); other files of the folder stay."""
        for name in OURS:
            p = self.path(name)
            if self.local:
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.unlink(p)
            else:
                from pyarrow.fs import FileType  # lazy (platform/README.md)

                info = self.fs.get_file_info(p)
                if info.type == FileType.Directory:
                    self.fs.delete_dir(p)
                elif info.type == FileType.File:
                    self.fs.delete_file(p)

    def remove_leftovers(self) -> None:
        """Temporary files a killed job left (on an object store there are none)."""
        if not self.local and not self._renames():
            return
        for sub in (MENTIONS, DOCUMENTS, SHARDS):
            for name in self.list(sub, hidden=True):
                if name.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        if self.local:
                            os.unlink(self.path(f"{sub}/{name}"))
                        else:
                            self.fs.delete_file(self.path(f"{sub}/{name}"))


def _temporary(target: str) -> str:
    """A hidden name beside `target` that ends as it does (a writer goes by `.gz`)."""
    folder, base = os.path.split(target)
    return os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{base}")
