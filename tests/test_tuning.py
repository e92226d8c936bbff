"""Tuning bookkeeping without Ray: how a finished or resumed search closes its MLflow runs and Optuna trials."""


def test_after_a_resumed_search_no_trial_run_or_study_trial_is_left_running(tmp_path):
    """A driver SIGKILLed seconds after a trial started can leave that trial unknown to Tune's
    saved state; `--resume` samples a new one. The lost trial's MLflow run and Optuna trial are
    closed, and the trials Tune knows are closed by what they logged."""
    import optuna
    from mlflow import MlflowClient

    from bioner.studies.tune import METRIC, close_trial_runs, fail_lost_study_trials

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("t")
    parent = client.create_run(exp).info.run_id

    def trial(tid, epochs_logged):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "bioner.kind": "trial", "ray.trial_id": tid})
        for e in range(1, epochs_logged + 1):
            client.log_metric(run.info.run_id, METRIC, 0.5, step=e)
        return run.info.run_id

    done, cut, lost = trial("a", 2), trial("b", 1), trial("c", 0)
    close_trial_runs(client, exp, parent, max_epochs=2, known={"a", "b"})
    status = {r: (client.get_run(r).info.status, client.get_run(r).data.tags["stop_reason"]) for r in (done, cut, lost)}
    assert status[done] == ("FINISHED", "completed 2 epochs")
    assert status[cut][0] == "KILLED" and status[cut][1].startswith("ASHA stopped it after epoch 1")
    assert status[lost][0] == "KILLED" and status[lost][1].startswith("lost: the tuning driver was killed")

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)
    study.ask()  # suggested to the trial the killed driver lost
    fail_lost_study_trials("s", storage)
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=storage).trials] == ["COMPLETE", "FAIL"]
