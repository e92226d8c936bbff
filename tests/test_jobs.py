"""The one resume scheme of train, tune and sweep (studies.jobs): a state file and a lock per job,
the older single state file read as one more job, and which job `--resume` picks."""

from __future__ import annotations

import json

import pytest

from bioner.errors import BionerError, ConfigError
from bioner.studies.jobs import holding_lock, jobs, legacy_state_path, new_job, resumable_job


@pytest.fixture
def store(tmp_path):
    """A real SQLite MLflow store with one experiment; returns (uri, client, experiment id)."""
    from mlflow import MlflowClient

    from bioner.tracking.store import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri)
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())


def test_the_older_single_state_file_is_read_once_as_the_oldest_job(tmp_path):
    legacy = legacy_state_path(tmp_path, "tune", "e")
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"parent_run_id": "old", "run_dir": "x", "study_name": "s"}))
    new_job(tmp_path, "tune", "e", "new", {"parent_run_id": "new"})
    assert [(j.run_id, j.state_file.name) for j in jobs(tmp_path, "tune", "e")] == [
        ("new", "new.json"),
        ("old", "bioner_tune.json"),
    ]
    # a legacy file naming a job that has its own state is not counted twice
    legacy.write_text(json.dumps({"parent_run_id": "new"}))
    assert [j.run_id for j in jobs(tmp_path, "tune", "e")] == ["new"]


def test_resume_picks_the_newest_job_not_running_not_finished_and_alike(tmp_path, store):
    uri, client, exp = store
    ids = [client.create_run(exp).info.run_id for _ in range(3)]
    a, b, c = (new_job(tmp_path, "train", "e", i, {"config": {"seed": n}}) for n, i in enumerate(ids))
    differs = lambda job: None if job.state["config"]["seed"] != 9 else "--resume: seed differs"  # noqa: E731

    with holding_lock(c):  # the newest is running
        assert resumable_job(tmp_path, "train", "e", "training job", uri, differs).run_id == b.run_id
        client.set_terminated(b.run_id, "FINISHED")
        assert resumable_job(tmp_path, "train", "e", "training job", uri, differs).run_id == a.run_id
        # a study may resume a finished job (nothing is redone)
        assert resumable_job(tmp_path, "train", "e", "job", uri, differs, finished_ok=True).run_id == b.run_id
        client.set_terminated(a.run_id, "FINISHED")
        with pytest.raises(BionerError, match=rf"\(run {c.run_id}\) is still running"):
            resumable_job(tmp_path, "train", "e", "training job", uri, differs)
    with pytest.raises(ConfigError, match="^--resume: seed differs$"):
        resumable_job(tmp_path, "train", "e", "training job", uri, lambda job: "--resume: seed differs")
    with pytest.raises(BionerError, match=r"^--resume: no tuning job to resume \(.*jobs has none\)$"):
        resumable_job(tmp_path, "tune", "e", "tuning job", uri)


def test_a_damaged_state_file_is_named(tmp_path):
    job = new_job(tmp_path, "sweep", "e", "r1", {"cells": []})
    job.state_file.write_text('{"run_id": "r1"')
    with pytest.raises(BionerError, match=rf"^--resume: {job.state_file} is damaged"):
        jobs(tmp_path, "sweep", "e")
    job.state_file.write_text("[]")
    with pytest.raises(BionerError, match=r"is damaged \(not a job's state\)"):
        jobs(tmp_path, "sweep", "e")
