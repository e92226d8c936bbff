"""Starting or joining Ray, and sharing the cluster's CPUs among the workers of a job."""

from __future__ import annotations

import math
import os
import socket
import tempfile

from ..config import TrainConfig


def default_cpus_per_worker(cfg: TrainConfig, concurrent: int = 1, reserved: float = 0.0) -> float:
    """The cluster's CPUs shared by `concurrent` jobs of num_workers each, less `reserved` per job.

    Fractional: a Tune trial holds 0.01 CPU, so on 2 cores its one worker gets 1.99 (2 threads).
    """
    import ray  # lazy (platform/README.md)

    if cfg.cpus_per_worker:
        return cfg.cpus_per_worker
    total = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    per = (total - reserved * concurrent) / (concurrent * cfg.num_workers)
    return max(0.1, math.floor(per * 100) / 100)


# Ray Train's controller looks at its workers every 2 s by default, so a run's end (and its start)
# waits up to one more interval, on every trial of a search (experiments/benchmarks/README.md, "The
# fixed cost of a fit"). A poll is a few local RPCs, so four a second are cheap. The processes Ray
# starts read it from the environment (a user's own value is kept).
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"
# A local Ray runs on this machine, which is not a spot instance: no preemption watcher (one actor,
# one more process importing Ray Train, per run).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(**kwargs) -> None:
    """A local Ray on 127.0.0.1 whose processes know their own dashboard.

    Ray Train's placement-group cleaner asks the State API for the controller's state; with no
    address it looks for "the" local Ray and fails when a second instance runs on the machine
    (another user's job, a test cluster). Naming the API server in the environment, which Ray's
    processes inherit from this driver, makes every instance find its own.
    """
    import ray  # lazy (platform/README.md)
    from ray._private import ray_constants

    # On Linux Ray announces the machine's network address and its gRPC servers (GCS, raylet,
    # workers, agents) listen on it, although `_node_ip_address="127.0.0.1"` is asked for. Its
    # single-machine mode (the macOS/Windows default) keeps the node address, hence every server,
    # on loopback. The variable is read by the processes Ray starts; this process imported Ray already.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs.setdefault("logging_level", "WARNING")
    for attempt in range(3):
        # A port free a moment ago can be taken before the dashboard binds it (by one of the servers
        # Ray starts on random ports, or by leftovers of a killed job): then try another.
        port = free_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        try:
            # address="local": a new instance, never one that `ray start` left running on this machine.
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                **kwargs,
            )
            return
        except ValueError as e:
            if "already occupied" not in str(e) or attempt == 2:
                raise
            ray.shutdown()


def ensure_ray() -> None:
    """Join $RAY_ADDRESS when it is set (a cluster, or a job on one), else start a local Ray.

    Joining, the job names its cluster's API server to every process it starts (Ray Train's
    controller and placement-group cleaner ask the State API, which otherwise looks for "the" Ray
    instance of the machine and fails when there are several). A Ray job's driver first leaves the
    folder Ray started it in (see leave_job_folder)."""
    import ray  # lazy (platform/README.md)

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if address:
        leave_job_folder()
        api = os.environ.get(API_SERVER_ENV) or _api_server_url(address)
        # merged into the job's own runtime env (per variable: one the job sets already must not be named again)
        env_vars = {} if TRAIN_POLL_ENV in os.environ else {TRAIN_POLL_ENV: TRAIN_POLL_S}
        if api and not os.environ.get(API_SERVER_ENV):
            os.environ[API_SERVER_ENV] = api
            env_vars[API_SERVER_ENV] = api
        ray.init(
            address=address,
            log_to_driver=True,
            logging_level="WARNING",
            runtime_env={"env_vars": env_vars} if env_vars else None,
        )
    else:
        start_local_ray(log_to_driver=True)


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


def _api_server_url(address: str) -> str | None:
    """The dashboard (State and Jobs API) URL of the cluster at a GCS address, from the GCS itself."""
    if "://" in address:  # ray:// (Ray Client) or http:// (a dashboard): nothing to look up
        return address if address.startswith("http") else None
    from ray.dashboard.utils import ray_address_to_api_server_url  # lazy (platform/README.md)

    try:
        return ray_address_to_api_server_url(address)
    except Exception:  # no dashboard on that cluster: Ray's own lookup applies, as before
        return None


def in_ray_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def leave_job_folder() -> None:
    """A Ray job's driver moves out of Ray's unpacked copy of its working_dir, into a folder of its own.

    Ray's working_dir plugin unpacks a package with overwrite=True whenever a node's runtime-env
    agent first meets it: it deletes the folder and unpacks it again at the same path. When two
    nodes share one temp dir (two nodes on one host, as Ray's own multi-node tests and ours run
    them), the second node does this under the running driver as soon as a worker of the job lands
    on it: the driver's current directory becomes a deleted inode and every os.getcwd() fails
    (transformers' import resolves Path("src"); Tune's result listing calls relpath). The config's
    paths are absolute by now (config.load_config), so nothing the job reads depends on it.
    """
    if in_ray_job():
        os.chdir(tempfile.mkdtemp(prefix="bioner-job-"))
