"""Failures survived, with real kills: a Ray Train worker SIGKILLed mid-epoch, the whole `bioner
train` job SIGKILLed then `--resume`d, the `bioner tune` driver SIGKILLed then `--resume`d, and
the MLflow server stopped and started again during a run.

Every job runs as a `bioner` process with its own local Ray (started in its own session, so the
test can kill the process group as a whole).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from _faultkit import MlflowServer, clean_env, kill_group, wait_for
from mlflow import MlflowClient

from helpers import EXPERIMENTS, trial_runs_in_store, tune_smoke_args

pytestmark = pytest.mark.usefixtures("no_ray_in_process")


class Job:
    """A `bioner` process whose merged stdout/stderr lines are collected as they come."""

    def __init__(self, args: list[str], **env: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bioner.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(**env),
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def epochs_printed(self) -> list[tuple[int, str]]:
        """(worker pid, "k/n") of the `epoch k/n` lines the rank-0 worker prints after each epoch, in
        order, as the driver shows them (each once: the tests compare the list whole)."""
        import re

        found = re.findall(r"RayTrainWorker pid=(\d+)\S*\s+epoch (\d+/\d+):", self.output())
        return [(int(pid), e) for pid, e in found]

    def finish(self, timeout: float) -> int:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode

    def descendants(self):
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill_all(self) -> None:
        """SIGKILL the job's process group, then any of its processes that left the group."""
        import psutil

        procs = self.descendants()
        kill_group(self.proc)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        self._reader.join(timeout=10)


def train_worker_pids(job: Job) -> list[int]:
    out = []
    for p in job.descendants():
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p.pid)
        except Exception:  # gone between the listing and the look
            pass
    return out


def checkpointed_epoch(storage: Path) -> int:
    """The epoch of the newest checkpoint Ray Train has recorded for any run under `storage`."""
    best = 0
    for snap in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):  # being rewritten
            continue
        best = max(best, int(latest.get("metrics", {}).get("epoch", 0)))
    return best


def steps(client, run_id: str, key: str = "train_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def the_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return client, runs


@pytest.fixture(scope="module")
def corpus_spec(make_dataset):
    # 1,600 training sentences at batch 4: 400 steps, several seconds an epoch with the tiny BERT on
    # an idle machine (160 took 0.6 s: epoch 2 ended before the kill), longer than Ray Train's
    # controller takes to record a checkpoint, so a kill lands mid-epoch
    return make_dataset("faults", sizes=(1600, 8, 8))


def train_args(spec, encoder, out: Path, *extra: str) -> list[str]:
    sets = [
        f"dataset={spec}",
        f"encoder={encoder}",
        f"output_dir={out}",
        "experiment=faults",
        "epochs=3",
        "batch_size=4",
        "max_length=48",
        "learning_rate=1e-3",
        "train_fraction=1.0",
        "train_splits=[train]",
        "eval_split=test",
        "beta=0",
        "num_workers=1",
        *extra,
    ]
    args = ["train", str(EXPERIMENTS / "quickstart.yaml"), "-q"]
    for s in sets:
        args += ["--set", s]
    return args


def test_worker_killed_mid_epoch_then_job_killed_then_resumed(tmp_path, corpus_spec, tiny_bert):
    """One job, two real kills.

    1. `max_failures=1`: the Ray Train worker is SIGKILLed in epoch 2, after epoch 1's checkpoint.
       Ray Train starts a new worker from that checkpoint: epoch 1 is not trained again.
    2. The whole `bioner train` process group is SIGKILLed in epoch 3, after epoch 2's checkpoint.
    3. `bioner train ... --resume` reopens the same MLflow run and trains epoch 3 only.
    MLflow ends with one FINISHED run holding each epoch's metrics exactly once.
    """
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    storage = out / "ray_results"
    args = train_args(corpus_spec, tiny_bert, out, "max_failures=1")
    job = Job(args)
    try:
        wait_for(lambda: checkpointed_epoch(storage) >= 1, 240, "epoch 1's checkpoint", job, every=0.2)
        pids = wait_for(lambda: train_worker_pids(job), 30, "the Ray Train worker process", job, every=0.2)
        client, runs = the_run(uri, "faults")
        (run,) = runs
        assert steps(client, run.info.run_id) == [1], "epoch 2 ended before the kill: the epochs are too short"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

        wait_for(
            lambda: checkpointed_epoch(storage) >= 2, 240, "epoch 2's checkpoint after the restart", job, every=0.2
        )
        wait_for(lambda: any(e == "2/3" for _, e in job.epochs_printed()), 30, "the epoch 2 line", job, every=0.2)
        assert steps(client, run.info.run_id) == [1, 2]
        job.kill_all()
    finally:
        if job.proc.poll() is None:
            job.kill_all()
    # the worker started after the kill began at epoch 2: epoch 1 was not trained again
    printed = job.epochs_printed()
    assert [e for _, e in printed] == ["1/3", "2/3"] and printed[0][0] in pids and printed[1][0] not in pids, printed
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # killed: neither FINISHED nor closed

    resumed = Job(args + ["--resume"])
    assert resumed.finish(timeout=300) == 0, resumed.output()[-3000:]
    assert [e for _, e in resumed.epochs_printed()] == ["3/3"], resumed.output()[-3000:]
    client, runs = the_run(uri, "faults")
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    final = client.get_run(run.info.run_id)
    assert final.info.status == "FINISHED" and "test_f1" in final.data.metrics
    for key in ("train_loss", "train_loss_ner", "lr"):
        assert steps(client, run.info.run_id, key) == [1, 2, 3], key

    from _faultkit import assert_refused, bioner

    assert_refused(bioner(*args, "--resume"), "--resume: the last job of experiment 'faults'", "has finished")
    assert_refused(bioner(*args, "--set", "epochs=4", "--resume"), "--resume: epochs is 4, the interrupted job had 3")
    assert_refused(
        bioner(*args, "--set", "experiment=other", "--resume"), "--resume: no training job of experiment 'other'"
    )


def test_a_worker_lost_with_no_failures_left_is_one_line_exit_1_and_resumable(tmp_path, corpus_spec, tiny_bert):
    """`max_failures=0`: the Ray Train worker SIGKILLed in epoch 2 ends the job, a failure of the system,
    not of the input: one line starting `failed:` that names the run, exit code 1, the run FAILED. The
    input was valid, so `--resume` goes on from epoch 1's checkpoint."""
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    args = train_args(corpus_spec, tiny_bert, out, "max_failures=0", "epochs=2")
    job = Job(args)
    try:
        wait_for(lambda: checkpointed_epoch(out / "ray_results") >= 1, 240, "epoch 1's checkpoint", job, every=0.2)
        pids = wait_for(lambda: train_worker_pids(job), 30, "the Ray Train worker process", job, every=0.2)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        code = job.finish(timeout=180)
    finally:
        if job.proc.poll() is None:
            job.kill_all()
    client, (run,) = the_run(uri, "faults")
    last = job.lines[-1] if job.lines else ""
    # Ray's controller logs its own traceback (forwarded, each line prefixed by its actor): not the CLI's
    assert code == 1 and not [x for x in job.lines if x.startswith("Traceback")], job.output()[-3000:]
    assert last.startswith(f"failed: training run {run.info.run_id} stopped on the Ray workers"), last
    assert client.get_run(run.info.run_id).info.status == "FAILED"

    resumed = Job(args + ["--resume"])
    assert resumed.finish(timeout=300) == 0, resumed.output()[-3000:]
    assert [e for _, e in resumed.epochs_printed()] == ["2/2"], resumed.output()[-3000:]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_tune_driver_sigkilled_then_resumed(tmp_path, make_dataset, tiny_bert):
    """SIGKILL of the `bioner tune` process group after its first trial, then `--resume`."""
    spec = make_dataset("kill")
    out = tmp_path / "out"
    args = tune_smoke_args(spec, tiny_bert, out, "kill")
    uri = f"sqlite:///{out / 'mlflow.db'}"

    job = Job(args)
    try:
        # one trial at a time: a second trial's run exists only once the first has finished
        seen = wait_for(
            lambda: (lambda r: r if len(r) >= 2 else None)(trial_runs_in_store(out / "mlflow.db", "kill")),
            300,
            "the second trial",
            job,
        )
        job.kill_all()
    finally:
        if job.proc.poll() is None:
            job.kill_all()
    assert job.proc.returncode == -signal.SIGKILL
    (first_run, first_trial), (second_run, _) = seen[:2]

    resumed = Job(args + ["--resume"])
    assert resumed.finish(timeout=400) == 0, resumed.output()[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("kill").experiment_id
    runs = client.search_runs([exp], "tags.`bioner.kind` = 'trial'")
    done = [r for r in runs if r.info.status == "FINISHED"]
    ids = [t.data.tags["ray.trial_id"] for t in done]
    assert len(ids) == 2 and len(set(ids)) == 2 and first_trial in ids
    for t in done:  # a trial killed mid-way and restored was trained again, but every epoch is logged once
        assert len(client.get_metric_history(t.info.run_id, "devel_f1")) == 1, t.data.tags
    assert client.get_run(first_run).info.status == "FINISHED"
    # Tune saves its state every 10 s or more: the second trial, killed within seconds of its
    # start, is either restored (same id, finished above) or unknown to Tune, which then samples
    # a new trial; the lost trial's run is closed, never left RUNNING.
    lost = [r for r in runs if r.info.status != "FINISHED"]
    assert len(lost) <= 1, [(r.info.status, r.data.tags) for r in lost]
    for r in lost:
        assert r.info.status == "KILLED" and r.data.tags["stop_reason"].startswith("lost: the tuning driver was killed")
        assert r.info.run_id == second_run
    (parent,) = client.search_runs([exp], "tags.`bioner.kind` = 'tune'")
    assert parent.info.status == "FINISHED" and "test_f1_mean" in parent.data.metrics
    study = optuna.load_study(
        study_name=json.loads((out / "tune" / "kill" / "jobs" / f"{parent.info.run_id}.json").read_text())[
            "study_name"
        ],
        storage=f"sqlite:///{out / 'optuna.db'}",
    )
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE"] * 2 + ["FAIL"] * len(lost), states


def test_mlflow_server_restarted_during_a_run_loses_no_metric(tmp_path, corpus_spec, tiny_bert):
    """A real `mlflow server` on 127.0.0.1 is stopped once epoch 1 is logged and started again
    (same port, same store) only once the worker is stuck retrying epoch 2's metrics. MLflow's
    own HTTP retries are off here (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0) so bioner's retry window
    (BIONER_TRACKING_RETRY_S) is what carries the metric over the outage."""
    import psutil

    server = MlflowServer(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    server.start()
    store = server.store
    out = tmp_path / "out"
    job = Job(
        train_args(corpus_spec, tiny_bert, out, f"tracking_uri={server.uri}", "epochs=2"),
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        BIONER_TRACKING_RETRY_S="180",
    )
    try:

        def logged_steps():
            _, runs = the_run(store, "faults")
            return steps(MlflowClient(store), runs[0].info.run_id) if runs else []

        wait_for(lambda: logged_steps() == [1], 240, "epoch 1's metrics", job, every=0.2)
        (pid,) = wait_for(lambda: train_worker_pids(job), 30, "the Ray Train worker process", job)
        worker = psutil.Process(pid)
        t_stop = time.time()  # before stop(): the server refuses new requests as soon as it drains
        server.stop()

        def idle():  # training burns a core; a worker waiting between retries does not
            return worker.cpu_percent(interval=1.0) < 20 and worker.cpu_percent(interval=1.0) < 20

        wait_for(idle, 120, "the worker to wait on the stopped server", job, every=0)
        assert logged_steps() == [1]
        t_start = time.time()
        server.start()
        assert job.finish(timeout=300) == 0, job.output()[-3000:]
    finally:
        if job.proc.poll() is None:
            job.kill_all()
        server.stop()
    client, (run,) = the_run(store, "faults")
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in hist) == [1, 2]
    epoch2 = next(m for m in hist if m.step == 2)
    assert t_stop * 1000 <= epoch2.timestamp <= t_start * 1000  # produced while the server was down
