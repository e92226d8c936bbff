"""`bioner annotate`: the driver. Everything a user can get wrong is refused before Ray starts (inputs,
model, output folder, MLflow store); then the shards not done yet go through the Ray Data pipeline
(pipeline.py), and the session ends by writing the manifest and ending the MLflow run, whatever
stopped it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from ...errors import BionerError, SystemFailure, first_line
from . import manifest as mf
from .inputs import BadRecord, find_shards
from .modelref import ModelInfo, model_types, resolve
from .options import AnnotateOptions, AnnotateResult, check_options
from .output import DOCUMENTS, ERRORS, MANIFEST, MENTIONS, OutputDir
from .pipeline import Stop, run_pipeline
from .record import end_run, open_run


def run_annotate(o: AnnotateOptions, say: Callable[[str], None]) -> AnnotateResult:
    """The whole job; `say` prints a line for the user (stderr)."""
    check_options(o)
    shards = find_shards(o.inputs, o.format)
    out = OutputDir(o.output)
    job = mf.identity(o.model, shards, o.output_format, o.types)
    with _job_lock(out):
        manifest = _claim(out, job, o)
        if manifest is not None and manifest.get("status") == "finished":
            say(f"annotate: the job in {out.display()} has finished already; nothing to do")
            return _result_of(out, manifest, len(shards))
        info, folder = resolve(o.model, o.tracking_uri, manifest.get("model") if manifest else None)
        known = model_types(folder)
        unknown = sorted(set(o.types or []) - set(known))
        if unknown:
            raise BionerError(f"--types {','.join(unknown)}: not known to the model (it knows {', '.join(known)})")
        out.prepare(MENTIONS if o.output_format == "parquet" else DOCUMENTS)
        done = mf.check_markers(out, shards)
        pending = [s for s in shards if s.index not in done]
        if done:
            say(f"annotate: resuming the job in {out.display()}: {len(done)} of {len(shards)} shards done already")
        run_id = open_run(o, info, manifest, shards)
        manifest = _start_manifest(out, o, job, info, run_id, manifest, done)
        return _run(o, out, shards, pending, done, manifest, folder, run_id, say)


@contextlib.contextmanager
def _job_lock(out: OutputDir):
    """One job at a time in a local folder (the OS lock ends with the process: a killed job leaves it free)."""
    if not out.local:
        yield
        return
    from filelock import FileLock, Timeout  # lazy (platform/README.md)

    try:
        Path(out.root).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BionerError(f"--output {out.root}: cannot be created ({e.strerror})") from None
    lock = FileLock(out.path(".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BionerError(
            f"--output {out.root}: another bioner annotate is writing to it; wait for it or stop it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _claim(out: OutputDir, job: dict, o: AnnotateOptions) -> dict | None:
    """The manifest of this job found in the folder (a resume), or None for a fresh start; the folder
    of another job is refused unless --overwrite, which clears it."""
    manifest = mf.read_manifest(out) if not o.overwrite else None
    if manifest is not None and manifest["job"] != job:
        other = mf.difference(manifest["job"], job)
        raise BionerError(
            f"--output {out.display()}: holds the manifest of another job ({other}); "
            "name another folder, or --overwrite to replace it"
        )
    if manifest is None:
        if o.resume:
            raise BionerError(f"--resume: {out.display()} holds no job to resume (no {MANIFEST})")
        found = out.holds_ours()
        if found and not o.overwrite:
            raise BionerError(
                f"--output {out.display()}: holds {', '.join(found)} of an unknown job (no {MANIFEST}); "
                "name another folder, or --overwrite to replace them"
            )
        if found:
            out.remove_ours()
    return manifest


def _result_of(out: OutputDir, manifest: dict, shards: int) -> AnnotateResult:
    return AnnotateResult(
        out.display(),
        manifest.get("run_id"),
        manifest["status"],
        shards,
        shards,
        *(int(manifest.get(k, 0)) for k in ("documents", "sentences", "mentions", "errors")),
    )


# --------------------------------------------------------------------------- manifest


def _start_manifest(
    out: OutputDir,
    o: AnnotateOptions,
    job: dict,
    info: ModelInfo,
    run_id: str,
    manifest: dict | None,
    done: dict[int, dict],
) -> dict:
    if manifest is None:
        manifest = {
            "version": mf.VERSION,
            "job": job,
            "model": info.to_dict(),
            "inputs_given": list(o.inputs),
            "tracking_uri": o.tracking_uri,
            "experiment": o.experiment,
            "started": mf.now(),
            "sessions": [],
        }
    for s in manifest["sessions"]:
        if s.get("seconds") is None:  # a session that was killed: it lasted until its last shard was marked
            ends = [m["finished_at"] for m in done.values() if m.get("finished_at", 0) >= s["started_ts"]]
            s["seconds"] = round(max(ends) - s["started_ts"], 3) if ends else 0.0
    manifest["sessions"].append({"started": mf.now(), "started_ts": time.time(), "seconds": None})
    manifest.update(run_id=run_id, status="running", updated=mf.now())
    out.write_json(MANIFEST, manifest)
    return manifest


def _write_errors(out: OutputDir, markers: list[dict], extra: list[BadRecord]) -> None:
    import json  # lazy (platform/README.md)

    records = [b for m in sorted(markers, key=lambda m: m["shard"]) for b in m.get("bad_records", [])]
    records += [{"file": b.file, "line": b.line, "reason": b.reason} for b in extra]
    out.write_bytes(ERRORS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))


# --------------------------------------------------------------------------- the run


def _run(
    o: AnnotateOptions,
    out: OutputDir,
    shards,
    pending,
    done: dict[int, dict],
    manifest: dict,
    folder: Path,
    run_id: str,
    say,
) -> AnnotateResult:
    markers = dict(done)
    result = AnnotateResult(out.display(), run_id, "running", len(shards), len(done))
    t0 = time.perf_counter()
    error: str | None = None
    status, unmarked = "failed", []
    try:
        out.remove_leftovers()
        if pending:
            run_pipeline(o, out, shards, pending, markers, folder, run_id, result, say)
        status = "finished"
    except Stop as e:
        error, unmarked = str(e), e.bad
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted"
        raise
    except BionerError as e:
        error = f"error: {first_line(e, 300)}"
        raise
    except Exception as e:  # Ray's: the cluster, not the input (the shards marked done are kept)
        error = f"error: {type(e).__name__}: {first_line(e, 300)}"
        raise SystemFailure(
            f"annotate stopped on the cluster ({type(e).__name__}: {first_line(e, 300)}); run the same command "
            f"again to go on (the shards marked done in {out.display()} are kept)"
        ) from e
    finally:
        result.seconds = time.perf_counter() - t0
        manifest["sessions"][-1]["seconds"] = round(result.seconds, 3)
        mf.finished(manifest, list(markers.values()), status, error)
        if o.max_errors is not None or manifest.get("errors"):
            _write_errors(out, list(markers.values()), unmarked)
        out.write_json(MANIFEST, manifest)
        end_run(
            o, run_id, out, manifest, {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED"), error
        )
    if error is not None:
        raise BionerError(error)
    for k in ("documents", "sentences", "mentions", "errors"):
        setattr(result, k, int(manifest[k]))
    result.status = status
    return result
