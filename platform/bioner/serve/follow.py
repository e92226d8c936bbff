"""Which model answers: the model URI parsed, a new version loaded beside the serving one, the switch.

No Ray here: a replica (server.py) owns one Follower. A followed URI (`models:/NAME@ALIAS`) is read
in the background every `poll_s` and, with `check_alias`, once per batch as well. A batch reads the
alias only after all its requests have arrived, so the version it answers with is the one the alias
named when each request was made, or a later one. On a SQLite store the per-batch read is skipped
while the store's files are unchanged since the last read began (a stat, not a query: a registry read
costs a replica a fair share of tagging one sentence; experiments/benchmarks/README.md, "Serving load
test"). The switch is one assignment: a batch that took the old model finishes on it, and the old
model is freed when the last such batch returns.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import first_line
from ..infer.tagger import Tagger
from ..tracking.models import resolve_model
from ..tracking.store import sqlite_file

# Ray Serve sends a replica's "ray.serve" logger to its log file and to the driver's console.
log = logging.getLogger("ray.serve")

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
HISTORY = 100  # switches kept for GET /model
# A file's mtime comes from the kernel's coarse clock (a few ms per tick): a store modified less than
# this long before it was looked at may be modified again with the same mtime, so it is not trusted.
SETTLE_NS = 50_000_000
WARM_UP = ["Germline mutations in BRCA1 cause hereditary breast cancer ."]


@dataclass(frozen=True)
class ModelRef:
    """A model URI: a registered model's alias (followed) or version (pinned), or anything else (fixed)."""

    uri: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @property
    def follows(self) -> bool:
        return self.alias is not None


def parse_model_uri(uri: str) -> ModelRef:
    m = _MODELS_URI.match(uri)
    return ModelRef(uri, m["name"], m["alias"], m["version"]) if m else ModelRef(uri)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def load_tagger(folder: Path, precision: str = "auto") -> Tagger:
    """The one place a served Tagger is built: int8 on a CPU unless told otherwise (infer.int8)."""
    return Tagger.load(folder, precision=precision)


@dataclass(frozen=True)
class Loaded:
    """A model in memory and where it came from. `seq`: the registry read that chose it."""

    tagger: Tagger
    name: str
    version: str | None
    run_id: str | None
    source: str
    loaded_at: str
    seq: int = 0

    def info(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "source": self.source,
            "types": list(self.tagger.types),
            "loaded_at": self.loaded_at,
        }


class Registry:
    """The MLflow registry and artifact store, as one replica reads them; opened on first use (a model
    folder never opens it: MLflow's SQLite store creates its file when a client opens it)."""

    def __init__(self, tracking_uri: str | None):
        self.uri = tracking_uri
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import mlflow  # lazy (platform/README.md)

            if self.uri:
                # process-wide, and meant so (a replica is its own process): MLflow's models:/ downloads
                # open a client on the default store, else a new sqlite:///mlflow.db in the working directory
                mlflow.set_tracking_uri(self.uri)
                mlflow.set_registry_uri(self.uri)
            self._client = mlflow.MlflowClient(self.uri, registry_uri=self.uri)
        return self._client

    def marker(self) -> tuple | None:
        """What the store's files look like now, if that says whether the registry changed: a SQLite
        store's database, WAL and journal files (mtime, size); None (unknown: read it) for any other
        store, or for files modified too recently to be trusted."""
        db = sqlite_file(self.uri) if self.uri else None
        if db is None:
            return None
        now, mark = time.time_ns(), []
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-journal")):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                mark.append(None)
                continue
            if now - st.st_mtime_ns < SETTLE_NS:
                return None
            mark.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(mark)

    def alias_version(self, name: str, alias: str) -> tuple[str, str | None]:
        """(version, run id) the alias names now."""
        mv = self.client.get_model_version_by_alias(name, alias)
        return str(mv.version), mv.run_id

    def run_of(self, name: str, version: str) -> str | None:
        return self.client.get_model_version(name, version).run_id

    def fetch(self, uri: str, dst: Path) -> Path:
        import mlflow  # lazy (platform/README.md)

        _ = self.client  # the store and registry URIs are set first
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=self.uri, registry_uri=self.uri
            )
        )


def load(
    ref: ModelRef, registry: Registry, version: str | None, run_id: str | None, seq: int = 0, precision: str = "auto"
) -> Loaded:
    """Download (into a folder deleted once the weights are in memory), build the Tagger, warm it up."""
    if ref.name is not None:
        source, name = f"models:/{ref.name}/{version}", ref.name
    else:  # a folder is named by its last part (outputs/models/<run_id>), anything else by its URI
        source = ref.uri
        name = Path(ref.uri).expanduser().resolve().name if Path(ref.uri).expanduser().is_dir() else ref.uri
    if Path(source).expanduser().is_dir():
        tagger = load_tagger(resolve_model(source), precision)
    else:
        with tempfile.TemporaryDirectory(prefix="bioner-serve-") as tmp:
            tagger = load_tagger(resolve_model(str(registry.fetch(source, Path(tmp)))), precision)
    tagger.entities(WARM_UP)  # the first forward pass allocates: not on a client's time
    return Loaded(tagger, name, version, run_id, source, now_iso(), seq)


class Follower:
    """The model a replica answers with, kept at the version the alias names."""

    def __init__(self, ref: ModelRef, registry: Registry, check_alias: bool = True, retry_s: float = 10.0, loader=load):
        self.ref, self.registry, self.check_alias, self.retry_s = ref, registry, check_alias, retry_s
        self._loader = loader
        self.current: Loaded | None = None
        self.history: collections.deque[dict] = collections.deque(maxlen=HISTORY)
        self.last_error: dict | None = None
        self._seq = 0
        self._lock = asyncio.Lock()  # one load at a time; a batch that needs the same version waits for it
        self._failed: dict[str, float] = {}  # version -> when its load failed (not retried for retry_s)
        self._last: tuple | None = None  # (store marker before a read, that read's seq, version, run id)

    async def start(self) -> Loaded:
        """Load the version the URI names now (a failure here fails the replica's start)."""
        if self.ref.follows:
            seq, version, run_id = await self._read()
        else:
            seq, version = 0, self.ref.version
            run_id = await asyncio.to_thread(self.registry.run_of, self.ref.name, version) if version else None
        self.current = await asyncio.to_thread(self._loader, self.ref, self.registry, version, run_id, seq)
        log.info("bioner serve: %s loaded", self.current.name + (f" version {version}" if version else ""))
        return self.current

    async def _read(self) -> tuple[int, str, str | None]:
        self._seq += 1  # numbered before the read starts: a larger number read the alias later
        seq, mark = self._seq, self.registry.marker()
        version, run_id = await asyncio.to_thread(self.registry.alias_version, self.ref.name, self.ref.alias)
        if mark is not None:
            self._last = (mark, seq, version, run_id)
        return seq, version, run_id

    async def _read_if_changed(self) -> tuple[int, str, str | None]:
        """The alias now: the last read's answer while the store is as it was when that read began."""
        last = self._last
        if last is not None and last[0] == self.registry.marker():
            return last[1:]
        return await self._read()

    async def fresh(self) -> Loaded:
        """The model for a batch whose requests have all arrived."""
        if not (self.ref.follows and self.check_alias):
            return self.current
        try:
            seq, version, run_id = await self._read_if_changed()
        except Exception as e:  # the registry is down or the alias gone: answer with what we have
            self._error(f"reading {self.ref.uri}: {first_line(e)}")
            return self.current
        return await self.ensure(seq, version, run_id)

    async def poll_forever(self, interval_s: float) -> None:
        """Follow the alias between requests too, so a promotion is loaded before traffic needs it."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                seq, version, run_id = await self._read()
            except Exception as e:  # keep polling whatever the registry does
                self._error(f"reading {self.ref.uri}: {first_line(e)}")
                continue
            await self.ensure(seq, version, run_id)

    async def ensure(self, seq: int, version: str, run_id: str | None) -> Loaded:
        """The model to answer with, the alias having named `version` at read `seq`: the current one if
        it is that version or a later read chose it, else `version`, loaded beside it and switched to."""
        cur = self.current
        if cur.version == version or cur.seq > seq:
            return cur
        async with self._lock:
            cur = self.current
            if cur.version == version or cur.seq > seq:
                return cur
            failed = self._failed.get(version)
            if failed is not None and time.monotonic() - failed < self.retry_s:
                return cur
            t0 = time.monotonic()
            try:
                new = await asyncio.to_thread(self._loader, self.ref, self.registry, version, run_id, seq)
            except Exception as e:  # a broken version must not take the service down: keep the old one
                self._failed[version] = time.monotonic()
                self._error(f"loading version {version}: {first_line(e)}; still answering with version {cur.version}")
                return cur
            self._failed.pop(version, None)
            self.current = new  # the switch
            self.history.append(
                {"from": cur.version, "to": new.version, "at": new.loaded_at, "load_s": round(time.monotonic() - t0, 3)}
            )
            log.info(
                "bioner serve: %s switched from version %s to %s at %s (loaded in %.1f s)",
                new.name,
                cur.version,
                new.version,
                new.loaded_at,
                time.monotonic() - t0,
            )
            return new

    def _error(self, message: str) -> None:
        if self.last_error is None or self.last_error["error"] != message:
            log.warning("bioner serve: %s", message)
        self.last_error = {"error": message, "at": now_iso()}

    def info(self) -> dict:
        return {
            **self.current.info(),
            "uri": self.ref.uri,
            "alias": self.ref.alias,
            "following": self.ref.follows,
            "history": list(self.history),
            "last_error": self.last_error,
        }
