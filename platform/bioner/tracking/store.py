"""The MLflow store and the job's output folder: checked before anything starts, then opened."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from filelock import FileLock

from ..config import sqlite_file
from ..errors import BionerError, first_line

# Free space (MiB) the output folder needs before a job starts: room for the checkpoints, the model
# copy and its logged artifact of a MiniLM run (experiments/benchmarks/README.md, "Disk space a run
# needs"); a larger encoder needs more, which the variable sets.
MIN_FREE_ENV, MIN_FREE_DEFAULT_MB = "BIONER_MIN_FREE_MB", 512


def prepare_output_dir(path: str) -> Path:
    """Create the output folder and prove it is writable, before any training starts."""
    out = Path(path).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise BionerError(f"output_dir {out}: not writable ({e.strerror})") from None
    free_mb = shutil.disk_usage(out).free / 2**20
    need_mb = env_float(MIN_FREE_ENV, MIN_FREE_DEFAULT_MB)
    if free_mb < need_mb:
        raise BionerError(
            f"output_dir {out}: {free_mb:.0f} MiB free, a job needs at least {need_mb:.0f} MiB "
            f"(free some space, or set {MIN_FREE_ENV} to a lower floor)"
        )
    return out


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise BionerError(f"${name}={raw!r}: expected a number") from None


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Refuse at once when an MLflow server does not answer (MLflow's own retries take minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests  # lazy (platform/README.md)

    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise BionerError(
            f"tracking_uri {tracking_uri}: MLflow server not reachable ({type(e).__name__}); start it or fix the URI"
        ) from None


# SQLite stores this process has created or checked (MLflow keeps their engines for the process).
_OPENED: set[str] = set()
STORE_LOCK_TIMEOUT_S = 600


def open_store(tracking_uri: str, create: bool = True) -> None:
    """Make sure the store answers before it is used. A server must be reachable; a SQLite store is
    created and migrated under a file lock (MLflow migrates a fresh database without one, so two
    jobs starting at once on a new store both ran the migrations: "duplicate column name").
    `create=False`: a missing SQLite file is an error, not a new empty store."""
    db = sqlite_file(tracking_uri)
    if db is None:
        check_reachable(tracking_uri)
        return
    if not create and not db.is_file():
        raise BionerError(
            f"no MLflow store at {db} (tracking URI {tracking_uri}): nothing has been logged there; "
            "name the store with --tracking-uri or $MLFLOW_TRACKING_URI"
        )
    if tracking_uri in _OPENED:
        return
    from mlflow import MlflowClient  # lazy (platform/README.md)

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=STORE_LOCK_TIMEOUT_S):
        client = MlflowClient(tracking_uri)
        try:  # the first call of each store builds its engine and, on a new database, the tables
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        except Exception as e:  # sqlalchemy, MlflowException: one line, whatever the cause
            raise BionerError(
                f"tracking_uri {tracking_uri}: the MLflow store cannot be opened ({first_line(e, 200)})"
            ) from None
    _OPENED.add(tracking_uri)


def use_experiment(tracking_uri: str, experiment: str, output_dir: Path) -> str:
    """Point MLflow at the store and return the experiment id, creating it if needed.

    With the default SQLite store, artifacts go to <output_dir>/mlartifacts beside the database.
    """
    import mlflow  # lazy (platform/README.md)

    open_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        exp = mlflow.get_experiment_by_name(experiment)
    except Exception as e:  # an unreachable server raises MlflowException or a requests error
        raise BionerError(f"tracking_uri {tracking_uri}: MLflow is not reachable ({first_line(e, 200)})") from None
    if exp is not None:
        return exp.experiment_id
    loc = (output_dir / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite:") else None
    from mlflow.exceptions import MlflowException  # lazy (platform/README.md)

    try:
        return mlflow.create_experiment(experiment, artifact_location=loc)
    except MlflowException:  # another job created it a moment ago
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


def flat_params(cfg) -> dict[str, str]:
    out = {}
    for k, v in cfg.model_dump().items():
        out[k] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return out
