"""`bioner submit` and `bioner jobs`: run bioner commands on a Ray cluster through the Jobs API."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from ..cluster import follow, list_jobs, logs, resolve_address, status, stop, tracking_warning
from ..cluster import submit as do_submit
from .common import err, out

jobs_app = typer.Typer(help="Jobs on a Ray cluster: list, logs, stop.", no_args_is_help=True)

ADDRESS_HELP = "Ray dashboard address, http://HOST:8265 (default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS)."


def _address_opt():
    return typer.Option(None, "--address", help=ADDRESS_HELP)


def submit(
    args: list[str] = typer.Argument(
        ...,
        help="The bioner command to run on the cluster, after --: e.g. -- tune experiments/tune-smoke.yaml --set "
        "num_samples=16",
    ),
    address: str | None = _address_opt(),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI for the job, as seen from the cluster (default: $MLFLOW_TRACKING_URI); set in every "
        "worker's environment, passed to train/tune/fidelity as --set tracking_uri=... and to serve as --tracking-uri",
    ),
    working_dir: Path = typer.Option(
        Path("."),
        "--working-dir",
        help="Folder shipped to the cluster as the job's working directory (configs, specs, corpora); .venv, outputs, "
        "mlruns, .git and *.db stay here.",
    ),
    wait: bool = typer.Option(
        True,
        "--wait/--no-wait",
        help="Follow the job's logs until it ends (exit 0 only if it SUCCEEDED), or return once it is submitted.",
    ),
):
    """Submit a bioner command (e.g. `tune CONFIG`) to a Ray cluster as a Ray job; the working directory travels with it."""  # noqa: E501 - typer prints this docstring's line breaks as they are in `bioner --help`
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    addr = resolve_address(address)
    warning = tracking_warning(uri, addr, args[0] if args else "")
    if warning:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    job = do_submit(addr, args, uri, working_dir)
    a = f" --address {job.address}" if address else ""
    out.print(f"submitted [bold]{job.job_id}[/] to {job.address}", highlight=False)
    out.print(f"  {job.entrypoint}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"follow: bioner jobs logs {job.job_id} --follow{a}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"stop:   bioner jobs stop {job.job_id}{a}", markup=False, highlight=False, soft_wrap=True)
    if wait:
        _follow_and_exit(addr, job.job_id)


def _follow_and_exit(address: str, job_id: str) -> None:
    try:
        status = follow(address, job_id, _write)
    except KeyboardInterrupt:
        err.print(
            f"stopped following; the job goes on (bioner jobs stop {job_id} --address {address})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    out.print(f"job {job_id}: {status}", highlight=False)
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _write(chunk: str) -> None:
    sys.stdout.write(chunk)
    sys.stdout.flush()


@jobs_app.command("list")
def jobs_list(
    address: str | None = _address_opt(),
    limit: int = typer.Option(20, help="Newest jobs to show."),
):
    """The cluster's jobs, newest first: id, status, entrypoint, start time, duration."""
    t = Table(title="jobs")
    for c in ("submission id", "status", "entrypoint", "started", "duration"):
        t.add_column(c, no_wrap=c != "entrypoint")
    for j in list_jobs(address)[:limit]:
        start = datetime.fromtimestamp(j.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S") if j.start_time else "-"
        dur = f"{(j.end_time - j.start_time) / 1000:.0f} s" if j.start_time and j.end_time else "-"
        ep = j.entrypoint if len(j.entrypoint) <= 70 else j.entrypoint[:67] + "..."
        t.add_row(j.submission_id or j.job_id or "-", str(j.status), ep, start, dur)
    out.print(t)


@jobs_app.command("logs")
def jobs_logs(
    job_id: str = typer.Argument(..., help="Submission id (raysubmit_...) as printed by bioner submit."),
    address: str | None = _address_opt(),
    follow_: bool = typer.Option(
        False, "--follow", "-f", help="Keep streaming until the job ends; exit 0 only if it SUCCEEDED."
    ),
):
    """Print a job's logs (driver stdout and stderr)."""
    if follow_:
        _follow_and_exit(resolve_address(address), job_id)
    else:
        _write(logs(address, job_id))


@jobs_app.command("stop")
def jobs_stop(
    job_id: str = typer.Argument(..., help="Submission id (raysubmit_...)."),
    address: str | None = _address_opt(),
):
    """Ask the cluster to stop a job (SIGTERM to its entrypoint, then a kill after a grace period)."""
    if stop(address, job_id):
        out.print(f"stopping {job_id}", highlight=False)
    else:
        out.print(f"{job_id} is not running ({status(address, job_id)})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `submit` and the `jobs` group to the main `bioner` app."""
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs")
