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


def test_sweep_progress_after_a_resume_estimates_from_the_cells_trained_now_only(capsys, monkeypatch):
    """Cells finished before `--resume` come back in a moment; counting them made the estimate
    promise minutes for what takes an hour. They are marked kept and left out of it."""
    from types import SimpleNamespace

    from bioner.studies import sweep as sweep_mod

    clock = iter([0.0, 1.0, 2.0, 602.0])  # t0, two kept cells at once, one trained cell in ten minutes
    monkeypatch.setattr(sweep_mod.time, "perf_counter", lambda: next(clock))
    progress = sweep_mod.progress_callback(4)

    def trial(name, **result):
        return SimpleNamespace(config={"cell": name}, last_result=result)

    progress.on_trial_complete(0, [], trial("a", test_f1=0.7, **{sweep_mod.RESUMED: 1}))
    progress.on_trial_complete(0, [], trial("b", test_f1=0.8, **{sweep_mod.RESUMED: 1}))
    progress.on_trial_complete(0, [], trial("c", test_f1=0.75))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/4] a kept (finished before --resume), F1 0.7000 (0.0 min so far, time left unknown)"
    assert "[2/4] b kept" in lines[1]
    # one cell trained in about ten minutes, one left: about ten minutes, not 3.3 (602 s / 3 cells)
    assert lines[2] == "[3/4] c done, F1 0.7500 (10.0 min so far, about 10.0 min left)"
