"""Ray Jobs submission: run a `bioner` command on a Ray cluster, and look after its jobs.

Everything goes through Ray's own Jobs API (`JobSubmissionClient`); the cluster runs the job's
entrypoint with the submitter's working directory unpacked as its current directory, so configs,
dataset specs and corpora travel with the job while the code itself is the `bioner` installed
on the cluster's image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import BionerError, ConfigError, first_line

# gitignore-style patterns, relative to the working directory: the job needs configs, specs and
# corpora, never the laptop's virtualenv, stores, caches or run outputs.
EXCLUDES = [
    ".venv",
    "venv",
    ".git",
    "outputs",
    "mlruns",
    "mlartifacts",
    "*.db",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "build",
    "dist",
    ".bench",
]
# Commands whose config takes `tracking_uri`: the submitted URI is passed to them as --set.
TRACKED = ("train", "tune", "sweep", "fidelity")
# Commands that take it as an option: `serve` reads its model from the registry there.
TRACKED_BY_OPTION = ("serve",)
TOKEN_HELP = (
    "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token "
    "(`ray get-auth-token` on the head node prints it)"
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def resolve_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS: the dashboard's HTTP address."""
    addr = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not addr:
        raise BionerError("no cluster address: pass --address http://HOST:8265 or set RAY_ADDRESS")
    if "://" not in addr:
        if addr == "auto" or ":" in addr:  # a GCS address (host:6379) or auto: Ray looks the dashboard up
            return _dashboard_of(addr)
        raise BionerError(f"--address {addr}: expected http://HOST:PORT (the Ray dashboard, 8265 by default)")
    if urlparse(addr).scheme not in ("http", "https", "ray"):
        raise BionerError(f"--address {addr}: expected http://HOST:PORT (the Ray dashboard, 8265 by default)")
    return addr.rstrip("/")


def _dashboard_of(addr: str) -> str:
    from ray.dashboard.utils import get_address_for_submission_client  # lazy (platform/README.md)

    with _environ(RAY_API_SERVER_ADDRESS=None, RAY_ADDRESS=None):
        try:
            return get_address_for_submission_client(addr)
        except (ConnectionError, RuntimeError, ValueError) as e:  # no Ray at that address
            raise BionerError(f"--address {addr}: no Ray cluster found there ({first_line(e)})") from None


def auth_headers() -> dict[str, str]:
    """The bearer token as Ray's own CLI finds it: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token.

    Ray's SDK sends it only when the client itself has RAY_AUTH_MODE=token; a laptop that submits
    to a remote cluster usually has no reason to set that, so the token is sent whenever one exists.
    """
    from ray._raylet import AuthenticationTokenLoader  # lazy (platform/README.md)
    from ray.exceptions import AuthenticationError

    loader = AuthenticationTokenLoader.instance()
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return {}
        return {"Authorization": "Bearer " + loader.get_raw_token(ignore_auth_mode=True)}
    except AuthenticationError as e:  # e.g. RAY_AUTH_TOKEN_PATH names a missing file
        raise BionerError(f"Ray token: {first_line(e)}") from None


@contextlib.contextmanager
def _environ(**values: str | None):
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_errors(address: str):
    """Turn the Jobs API's failures into one line that says what to do."""
    import requests  # lazy (platform/README.md)
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        if "Forbidden" in str(e) or "invalid" in str(e):
            raise BionerError(
                f"{address}: the cluster refused the Ray token (403): it is not this cluster's; {TOKEN_HELP}"
            ) from None
        raise BionerError(f"{address}: the cluster wants a token (401): {TOKEN_HELP}") from None
    except (ConnectionError, requests.exceptions.ConnectionError):
        raise BionerError(
            f"{address}: no Ray dashboard answers there (is the cluster up? `ray dashboard CLUSTER.yaml` opens a "
            "tunnel)"
        ) from None
    except RuntimeError as e:
        raise BionerError(f"{address}: {first_line(e)}") from None


def client(address: str | None):
    """A JobSubmissionClient for exactly this address, with the token when one is found."""
    from ray.job_submission import JobSubmissionClient  # lazy (platform/README.md)

    addr = resolve_address(address)
    # Ray lets $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS override the address argument; a local Ray
    # started by this process sets the former, so the chosen address is pinned here.
    with ray_errors(addr), _environ(RAY_API_SERVER_ADDRESS=addr if "://" in addr else None, RAY_ADDRESS=None):
        return JobSubmissionClient(addr, headers=auth_headers()), addr


def tracking_warning(uri: str | None, address: str, command: str) -> str | None:
    """Why this tracking URI may not reach the cluster (None: fine). Raises for a relative store path."""
    if not uri and command in TRACKED:
        return (
            "no --tracking-uri and no $MLFLOW_TRACKING_URI: runs go to a SQLite file inside the job's "
            "temporary working directory on the cluster; pass --tracking-uri http://HOST:5000 to keep them"
        )
    if not uri and command in TRACKED_BY_OPTION:
        return (
            "no --tracking-uri and no $MLFLOW_TRACKING_URI: the job reads models:/ URIs from an empty SQLite store "
            "inside its temporary working directory on the cluster; pass --tracking-uri http://HOST:5000"
        )
    if not uri:
        return None
    path = _store_path(uri)
    if path is not None:
        if not Path(path).is_absolute():
            raise ConfigError(
                f"--tracking-uri {uri}: a relative store path resolves inside the job's temporary working directory "
                "on the cluster and is lost; use an MLflow server (http://HOST:5000) or an absolute path"
            )
        return (
            f"--tracking-uri {uri} is a path on the cluster's machines: fine on a one-machine cluster, otherwise every "
            "node must see it"
        )
    host = urlparse(address).hostname or ""
    if urlparse(uri).hostname in LOOPBACK and host not in LOOPBACK:
        return f"--tracking-uri {uri} names loopback: the job resolves it on the cluster, not on this machine"
    return None


def _store_path(uri: str) -> str | None:
    """The file behind a sqlite:, file: or bare-path tracking URI; None for a server."""
    p = urlparse(uri)
    if p.scheme == "sqlite":  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
        return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if p.scheme == "file":
        return p.path
    return uri if p.scheme == "" else None


def entrypoint(args: list[str], tracking_uri: str | None) -> str:
    """`bioner ARGS`, with the tracking URI as an override for commands whose config has one."""
    args = list(args)
    if not args:
        raise BionerError("nothing to run: give the bioner command after --, e.g. -- tune experiments/tune-smoke.yaml")
    if args[0] == "bioner":
        args = args[1:]
    has_uri = any(a.startswith("tracking_uri=") for a in args)
    if tracking_uri and args and args[0] in TRACKED and not has_uri:
        args += ["--set", f"tracking_uri={tracking_uri}"]
    has_option = any(a == "--tracking-uri" or a.startswith("--tracking-uri=") for a in args)
    if tracking_uri and args and args[0] in TRACKED_BY_OPTION and not has_option:
        args += ["--tracking-uri", tracking_uri]
    return shlex.join(["bioner", *args])


def check_config_travels(args: list[str], working_dir: Path) -> None:
    """The CONFIG of train/tune/fidelity must be in the shipped folder (or absolute, on the cluster)."""
    if len(args) < 2 or args[0] not in TRACKED or args[1].startswith("-"):
        return
    cfg = Path(args[1])
    if not cfg.is_absolute() and not (working_dir / cfg).is_file():
        raise BionerError(f"{cfg}: not found under the working directory {working_dir} that is shipped to the cluster")


def runtime_env(working_dir: Path, tracking_uri: str | None) -> dict:
    env = {"working_dir": str(working_dir), "excludes": EXCLUDES}
    if tracking_uri:
        # env_vars reach the entrypoint and every task and actor of the job, i.e. every Ray Train worker.
        env["env_vars"] = {"MLFLOW_TRACKING_URI": tracking_uri}
    return env


@contextlib.contextmanager
def _quiet_packaging():
    """Ray logs every ignored file while zipping the working directory; keep its warnings only.

    The working-dir module also warns on every submission that .git and .venv are now excluded by
    default: we exclude them on purpose.
    """
    levels = {"ray": logging.WARNING, "ray._private.runtime_env.working_dir": logging.ERROR}
    old = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in old.items():
            logging.getLogger(name).setLevel(level)


@dataclass
class Submitted:
    job_id: str
    address: str
    entrypoint: str


def submit(address: str | None, args: list[str], tracking_uri: str | None, working_dir: Path) -> Submitted:
    working_dir = working_dir.resolve()
    if not working_dir.is_dir():
        raise BionerError(f"--working-dir {working_dir}: not a folder")
    check_config_travels(args, working_dir)
    cmd = entrypoint(args, tracking_uri)
    c, addr = client(address)
    with ray_errors(addr), _quiet_packaging():
        job_id = c.submit_job(
            entrypoint=cmd,
            runtime_env=runtime_env(working_dir, tracking_uri),
            metadata={"bioner_command": args[0] if args else ""},
        )
    return Submitted(job_id, addr, cmd)


async def _tail(c, job_id: str, write) -> None:
    async for chunk in c.tail_job_logs(job_id):
        write(chunk)


def follow(address: str | None, job_id: str, write) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    c, addr = client(address)
    with ray_errors(addr), _quiet_packaging():
        asyncio.run(_tail(c, job_id, write))
        status = c.get_job_status(job_id)
        # The log stream can close a moment before the status turns terminal.
        while not status.is_terminal():
            time.sleep(1)
            status = c.get_job_status(job_id)
    return str(status)


def logs(address: str | None, job_id: str) -> str:
    c, addr = client(address)
    with ray_errors(addr):
        return c.get_job_logs(job_id)


def status(address: str | None, job_id: str) -> str:
    c, addr = client(address)
    with ray_errors(addr):
        return str(c.get_job_status(job_id))


def list_jobs(address: str | None) -> list:
    c, addr = client(address)
    with ray_errors(addr):
        jobs = c.list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)


def stop(address: str | None, job_id: str) -> bool:
    c, addr = client(address)
    with ray_errors(addr):
        return c.stop_job(job_id)
