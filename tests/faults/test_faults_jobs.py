"""Issue 17, second round: training jobs refused late or not at all, concurrency and recovery.

Refused before any MLflow run or Ray start: an encoder folder that does not exist, a hub name
while the hub is out of reach, max_length beyond the encoder's positions or shorter than the
query needs; before any run opens, `use_gpu` on a cluster without GPUs (Ray waited forever).
Then: several processes creating one SQLite store at once, two jobs of one experiment in one
output_dir (each resumable), a damaged state file, a damaged or deleted checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _faultkit import assert_refused, bioner, clean_env
from mlflow import MlflowClient

from helpers import EXPERIMENTS


def train_args(spec, encoder, out: Path, *sets: str) -> list[str]:
    base = [
        f"dataset={spec}",
        f"encoder={encoder}",
        f"output_dir={out}",
        "experiment=jobs",
        "batch_size=8",
        "max_length=48",
        "train_fraction=1.0",
        "num_workers=1",
        "cpus_per_worker=1",
        *sets,
    ]
    args = ["train", str(EXPERIMENTS / "quickstart.yaml"), "-q"]
    for s in base:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def spec(make_dataset):
    return make_dataset("jobs", sizes=(32, 8, 8))


# --- 6, 9. refused before any run or Ray start ---------------------------------------------------


@pytest.mark.usefixtures("no_ray_in_process")
@pytest.mark.parametrize(
    "encoder, needle",
    [
        ("/nonexistent/encoder", "encoder '/nonexistent/encoder': no such folder"),
        (
            "no-such-org/no-such-model",
            "not in the Hugging Face cache, and the hub is out of reach (HF_HUB_OFFLINE is set)",
        ),
    ],
    ids=["missing-folder", "hub-name-offline"],
)
def test_an_encoder_that_cannot_load_is_refused_before_any_run_or_ray(tmp_path, spec, encoder, needle):
    import ray

    out = tmp_path / "out"
    assert_refused(bioner(*train_args(spec, encoder, out)), needle)
    assert not (out / "mlflow.db").exists() and not ray.is_initialized()


def test_a_hub_name_with_the_hub_unreachable_fails_at_once(tmp_path, spec):
    """Not offline by flag, but the hub does not answer (a closed local port stands for a cut network)."""
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "bioner.cli", *train_args(spec, "no-such-org/no-such-model", out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9"),
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "the hub is out of reach (http://127.0.0.1:9 does not answer" in lines[0]
    assert not (out / "mlflow.db").exists()


@pytest.mark.usefixtures("no_ray_in_process")
@pytest.mark.parametrize(
    "max_length, needles",
    [
        (1024, ["max_length 1024: the encoder", "takes at most 512 positions", "set max_length between {low} and 512"]),
        (
            16,
            [
                "max_length 16: too short for the longest query, the special tokens and 8 pieces",
                "the minimum here is {low}",
            ],
        ),
    ],
    ids=["above-positions", "below-query"],
)
def test_max_length_outside_what_the_encoder_and_queries_allow_is_refused_up_front(
    tmp_path, spec, tiny_bert, minilm_tokenizer, max_length, needles
):
    import ray

    # [CLS] query [SEP] sentence [SEP], the sentence at least 8 pieces; helpers.write_spec's annotation query
    query = minilm_tokenizer("A disease entity is a mention of a disease.", add_special_tokens=False)["input_ids"]
    low = len(query) + 3 + 8
    out = tmp_path / "out"
    o = bioner(*train_args(spec, tiny_bert, out, "beta=1", "query_source=annotation", f"max_length={max_length}"))
    assert_refused(o, *[n.format(low=low) for n in needles])
    assert not (out / "mlflow.db").exists() and not ray.is_initialized()


# --- 5. use_gpu without GPUs ---------------------------------------------------------------------


@pytest.mark.timeout(
    240, method="thread"
)  # before #17 the job waited for a GPU forever (in C: a signal cannot stop it)
def test_use_gpu_on_a_cluster_without_gpus_is_one_line_and_opens_no_run(ray_local, tmp_path, spec, tiny_bert):
    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("this machine's Ray has GPUs")
    out = tmp_path / "out"
    assert_refused(
        bioner(*train_args(spec, tiny_bert, out, "use_gpu=true")),
        "use_gpu: 1 worker(s) need 1 GPU(s)",
        "the Ray cluster has 0",
    )
    assert not (out / "mlflow.db").exists()


# --- 12. one new SQLite store, several processes at once -----------------------------------------


def test_processes_creating_one_sqlite_store_at_once_all_succeed(tmp_path):
    """Three processes open the experiment of a new store at the same moment; MLflow's migrations
    ran in each ("duplicate column name") until the store was created under a lock."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ready = tmp_path / "ready"
    ready.mkdir()
    # A barrier instead of a start time 8 s ahead: each process imports mlflow, says so, and goes once all three have.
    code = (
        "import os, pathlib, time; import mlflow; from bioner.tracking.store import use_experiment\n"
        f"ready = pathlib.Path({str(ready)!r}); (ready / str(os.getpid())).touch(); deadline = time.time() + 120\n"
        "while len(list(ready.iterdir())) < 3 and time.time() < deadline: time.sleep(0.005)\n"
        f"print(use_experiment({uri!r}, 'together', pathlib.Path({str(tmp_path)!r})))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=300), p.stdout.read().strip(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-1500:] for _, _, err in results]
    assert len({out for _, out, _ in results}) == 1  # one experiment, found or created by each


# --- 13, 14. two jobs in one output_dir, damaged state and checkpoints ---------------------------


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory, spec, tiny_bert, _ray_session):
    """Two jobs of one experiment in one output_dir, both ended KILLED as a kill after their last
    checkpoint leaves them: A (seed 1, 1 epoch), then B (seed 2, 2 epochs: two checkpoints)."""
    out = tmp_path_factory.mktemp("two-jobs") / "out"
    args = {
        "A": train_args(spec, tiny_bert, out, "beta=0", "seed=1", "epochs=1"),
        "B": train_args(spec, tiny_bert, out, "beta=0", "seed=2", "epochs=2"),
    }
    uri = f"sqlite:///{out / 'mlflow.db'}"
    run_ids = {}
    for name, a in args.items():
        o = bioner(*a)
        assert o.code == 0, o.stderr[-3000:]
        run_ids[name] = o.stdout.split("MLflow run:")[1].split()[0]
    client = MlflowClient(uri)
    for run_id in run_ids.values():
        client.set_terminated(run_id, "KILLED")
    return {"out": out, "args": args, "runs": run_ids, "client": client}


def test_two_jobs_in_one_output_dir_are_each_resumable(ray_local, two_jobs):
    a = two_jobs["runs"]["A"]
    o = bioner(*two_jobs["args"]["A"], "--resume")  # was: "seed is 1, the interrupted job had 2"
    assert o.code == 0, o.stderr[-3000:]
    assert f"MLflow run:   {a}" in o.stdout
    assert two_jobs["client"].get_run(a).info.status == "FINISHED"
    assert two_jobs["client"].get_run(two_jobs["runs"]["B"]).info.status == "KILLED"


def test_a_job_that_is_still_running_is_not_resumed(ray_local, two_jobs):
    from bioner.studies.jobs import Job, holding_lock

    b = two_jobs["runs"]["B"]
    state = two_jobs["out"] / "train" / "jobs" / "jobs" / f"{b}.json"
    with holding_lock(Job(b, state, {})):  # as the job's own process holds it while it runs
        assert_refused(bioner(*two_jobs["args"]["B"], "--resume"), f"(run {b}) is still running")


def _checkpoints(out: Path, run_id: str) -> list[Path]:
    snap = json.loads((out / "ray_results" / run_id / "checkpoint_manager_snapshot.json").read_text())
    return [out / "ray_results" / run_id / r["checkpoint_dir_name"] for r in snap["checkpoint_results"]]


def test_a_truncated_newest_checkpoint_falls_back_one_epoch(ray_local, two_jobs):
    out, b = two_jobs["out"], two_jobs["runs"]["B"]
    older, newest = _checkpoints(out, b)  # two kept: epochs 1 and 2
    w = newest / "model" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    o = bioner(*two_jobs["args"]["B"], "--resume")
    assert o.code == 0, o.stderr[-3000:]
    assert "model.safetensors: truncated" in o.stderr and "restarting from the checkpoint of epoch 1" in o.stderr
    assert two_jobs["client"].get_run(b).info.status == "FINISHED"
    kept = _checkpoints(out, b)
    assert older in kept and newest not in kept and len(kept) == 2  # epoch 2 trained again and checkpointed


def test_a_damaged_state_file_or_snapshot_or_deleted_checkpoints_are_one_line(ray_local, two_jobs):
    out, b, client = two_jobs["out"], two_jobs["runs"]["B"], two_jobs["client"]
    client.set_terminated(b, "KILLED")
    snap = out / "ray_results" / b / "checkpoint_manager_snapshot.json"
    good = snap.read_text()
    snap.write_text(good[: len(good) // 2])
    assert_refused(bioner(*two_jobs["args"]["B"], "--resume"), f"--resume: {snap} is damaged")
    snap.write_text(good)
    for d in _checkpoints(out, b):
        for f in d.rglob("*.safetensors"):
            f.unlink()
    assert_refused(
        bioner(*two_jobs["args"]["B"], "--resume"),
        "--resume: no checkpoint of this run can be restored",
        "epoch 2:",
        "epoch 1:",
    )
    shutil.rmtree(out / "ray_results" / b)
    assert_refused(
        bioner(*two_jobs["args"]["B"], "--resume"), f"--resume: run {b} logged epochs but its checkpoints are gone"
    )
    state = out / "train" / "jobs" / "jobs" / f"{b}.json"
    state.write_text('{"run_id": "' + b)
    assert_refused(bioner(*two_jobs["args"]["B"], "--resume"), f"--resume: {state} is damaged")
