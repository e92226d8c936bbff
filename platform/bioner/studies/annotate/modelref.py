"""The job's model: its URI resolved once by the driver (a registered alias pinned to the version it
names, so a resumed job tags with the same weights), and its files shipped to the actors through the
object store (nodes of a cluster do not see the driver's folders)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import BionerError, first_line
from ...model.io import META_FILE, check_model_folder, read_meta
from ...tracking.models import resolve_model
from ...tracking.store import open_store

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/.*)?$")


@dataclass
class ModelInfo:
    """What the manifest says of the model: the URI as given, the URI the job loads (a registered
    version rather than an alias), the registered name, version and run ID where there are any."""

    uri: str
    resolved: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve(uri: str, tracking_uri: str, pinned: dict | None = None) -> tuple[ModelInfo, Path]:
    """The model's identity and a local folder holding it. `pinned`: the manifest's model of the job
    being resumed, whose resolved URI is loaded again."""
    if pinned and pinned.get("uri") == uri:
        info = ModelInfo(**{k: pinned.get(k) for k in ("uri", "resolved", "name", "version", "run_id")})
    else:
        info = _identify(uri, tracking_uri)
    # resolved: a Ray job's driver leaves its folder (train.local_ray)
    folder = resolve_model(info.resolved, tracking_uri).resolve()
    try:
        check_model_folder(folder)
    except BionerError as e:
        raise BionerError(f"--model {uri}: {e}") from None
    return info, folder


def _identify(uri: str, tracking_uri: str) -> ModelInfo:
    m = _MODELS_URI.match(uri)
    if m is not None:
        client = _client(tracking_uri, uri)
        try:
            if m["alias"]:
                mv = client.get_model_version_by_alias(m["name"], m["alias"])
            else:
                mv = client.get_model_version(m["name"], m["version"])
        except Exception as e:  # MlflowException, or the store's own errors: one line either way
            raise BionerError(f"--model {uri}: does not resolve in {tracking_uri} ({first_line(e, 200)})") from None
        return ModelInfo(uri, f"models:/{m['name']}/{mv.version}", m["name"], str(mv.version), mv.run_id)
    r = _RUNS_URI.match(uri)
    if r is not None:
        _client(tracking_uri, uri)
        return ModelInfo(uri, uri, run_id=r["run_id"])
    if "://" in uri or uri.startswith("models:/"):
        _client(tracking_uri, uri)
    return ModelInfo(uri, uri)


def _client(tracking_uri: str, uri: str):
    """A client of the store and its registry; the process's default store is left as it is (the driver
    may be a caller's process)."""
    import mlflow  # lazy (platform/README.md)

    try:
        open_store(tracking_uri, create=False)
    except BionerError as e:
        raise BionerError(f"--model {uri}: {e}") from None
    return mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)


def model_types(folder: Path) -> list[str]:
    return list(read_meta(folder)["types"])


# --------------------------------------------------------------------------- shipping to actors


def pack(folder: Path) -> tuple[str, dict[str, bytes]]:
    """(a digest of the folder, its files by name): what an actor needs to rebuild it anywhere."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16], files


def unpack(digest: str, files: dict[str, bytes]) -> Path:
    """The packed folder on this node, written once per digest (actors of one node share it)."""
    root = Path(tempfile.gettempdir()) / "bioner-annotate-models"
    folder = root / digest
    if (folder / META_FILE).is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    try:
        os.rename(tmp, folder)
    except OSError:  # another actor of this node placed it first
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return folder
