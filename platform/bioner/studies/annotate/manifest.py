"""`manifest.json`: what the job is (its identity), what it used, and what it did.

The identity is what decides the output: the model URI as given, every input file (path, size,
format), the output format and the types asked for. A folder whose manifest has another identity
belongs to another job. Written with status `running` before any shard starts and rewritten at the
end (`finished`, or `failed` with the reason), with the totals summed from the shards' markers.
"""

from __future__ import annotations

import datetime as dt
import json

from ...errors import BionerError, first_line
from .inputs import Shard
from .output import MANIFEST, OutputDir, marker_name

VERSION = 1


def identity(model: str, shards: list[Shard], output_format: str, types: list[str] | None) -> dict:
    return {
        "model": model,
        "files": [{"path": s.path, "size": s.size, "format": s.format} for s in shards],
        "output_format": output_format,
        "types": sorted(types) if types is not None else None,
    }


def read_manifest(out: OutputDir) -> dict | None:
    text = out.read_text(MANIFEST)
    if text is None:
        return None
    try:
        manifest = json.loads(text)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("job"), dict):
            raise ValueError("not a manifest of bioner annotate")
    except ValueError as e:
        raise BionerError(
            f"--output {out.display(MANIFEST)}: damaged ({first_line(e, 120)}); use --overwrite to "
            "start the job again in this folder"
        ) from None
    return manifest


def difference(old: dict, new: dict) -> str:
    """How the job recorded in a folder differs from this one, in a few words."""
    if old.get("model") != new["model"]:
        return f"model {old.get('model')}"
    if old.get("output_format") != new["output_format"]:
        return f"--output-format {old.get('output_format')}"
    if old.get("types") != new["types"]:
        return f"--types {','.join(old.get('types') or []) or '(all)'}"
    files = old.get("files") or []
    if len(files) != len(new["files"]):
        return f"{len(files)} input files, not {len(new['files'])}"
    for a, b in zip(files, new["files"], strict=True):
        if a != b:
            return f"input {a.get('path')} ({a.get('size')} bytes, {a.get('format')})"
    return "another job"


def check_markers(out: OutputDir, shards: list[Shard]) -> dict[int, dict]:
    """The markers of the shards done already, checked against the shards they name."""
    done: dict[int, dict] = {}
    names = set(out.list(marker_name(0).split("/")[0]))
    for s in shards:
        name = marker_name(s.index)
        if name.split("/")[1] not in names:
            continue
        try:
            marker = json.loads(out.read_text(name) or "")
        except ValueError:
            continue  # not whole (cannot happen with atomic writes): the shard is done again
        if marker.get("input") != s.path or marker.get("size") != s.size:
            raise BionerError(
                f"--output {out.display(name)}: a marker of {marker.get('input')}, not of {s.path}; "
                "use --overwrite to start the job again in this folder"
            )
        done[s.index] = marker
    return done


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def totals(markers: list[dict]) -> dict:
    keys = ("documents", "sentences", "mentions", "errors")
    return {k: sum(int(m.get(k, 0)) for m in markers) for k in keys}


def inputs_of(markers: list[dict]) -> list[dict]:
    keep = ("input", "size", "sha256", "format", "documents", "sentences", "mentions", "errors", "output", "node")
    return [{k: m.get(k) for k in keep} for m in sorted(markers, key=lambda m: m["shard"])]


def finished(manifest: dict, markers: list[dict], status: str, error: str | None = None) -> dict:
    """The manifest at the end of a session: totals from the markers, time summed over the sessions."""
    t = totals(markers)
    seconds = sum(s.get("seconds", 0.0) for s in manifest.get("sessions", []))
    manifest.update(t)
    manifest.update(
        status=status,
        updated=now(),
        shards_done=len(markers),
        seconds=round(seconds, 3),
        documents_per_s=round(t["documents"] / seconds, 3) if seconds > 0 else None,
        inputs=inputs_of(markers),
    )
    if error is not None:
        manifest["error"] = error
    else:
        manifest.pop("error", None)
    return manifest
