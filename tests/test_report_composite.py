"""`bioner report` on a sweep with a composite dataset: each member corpus's score from the
composite model sits beside the member's own model, compared by a paired bootstrap over that
corpus's test sentences alone (real MLflow store, runs written as a sweep writes them)."""

from __future__ import annotations

from mlflow import MlflowClient

from bioner.data.iob import Split
from bioner.infer.evaluate import write_predictions
from bioner.studies.report import build_report
from bioner.studies.report.collect import Counts, cell_rows, summarize
from bioner.studies.tags import DATASET, KIND, PARENT, SWEEP_CORPORA, SWEEP_FRACTION, SWEEP_SEED, SWEEP_VARIANT, Kind

GOLD_D, GOLD_C = ["B-Disease", "O"], ["B-Chemical", "O"]


def _cell(client, exp, parent, tmp_path, dataset, seed, metrics, split: Split, pred, corpora=""):
    tags = {
        PARENT: parent,
        KIND: Kind.CELL,
        DATASET: dataset,
        SWEEP_VARIANT: "multi",
        SWEEP_SEED: str(seed),
        SWEEP_FRACTION: "1",
    }
    if corpora:
        tags[SWEEP_CORPORA] = corpora
    run = client.create_run(exp, tags=tags).info.run_id
    for k, v in {"eval_split": "test", "beta": "1.0", "query_source": "annotation", "epochs": "1"}.items():
        client.log_param(run, k, v)
    for k, v in metrics.items():
        client.log_metric(run, k, v)
    client.log_artifact(run, str(write_predictions(tmp_path / f"{run}.test.tsv", split, pred)), "predictions")
    client.set_terminated(run, "FINISHED")


def test_composite_cells_are_reported_per_member_against_the_members_own_models(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("sweep", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={KIND: Kind.SWEEP}).info.run_id
    n = 30
    dis = Split("test", tmp_path, [["flu", "x"]] * n, [GOLD_D] * n, ["dis"] * n, [("Disease",)] * n)
    chem = Split("test", tmp_path, [["salt", "x"]] * n, [GOLD_C] * n, ["chem"] * n, [("Chemical",)] * n)
    both = Split(
        "test",
        tmp_path,
        dis.tokens + chem.tokens,
        dis.tags + chem.tags,
        dis.corpus + chem.corpus,
        dis.annotated + chem.annotated,
    )
    for seed in (1, 2):
        half = [GOLD_D if i % 2 else ["O", "O"] for i in range(n)]  # the disease model finds half the diseases
        _cell(
            client,
            exp,
            parent,
            tmp_path,
            "dis",
            seed,
            {"test_precision": 1.0, "test_recall": 0.5, "test_f1": 2 / 3},
            dis,
            half,
        )
        _cell(
            client,
            exp,
            parent,
            tmp_path,
            "chem",
            seed,
            {"test_precision": 1.0, "test_recall": 1.0, "test_f1": 1.0},
            chem,
            chem.tags,
        )
        _cell(
            client,
            exp,
            parent,
            tmp_path,
            "both",
            seed,
            {
                "test_precision": 1.0,
                "test_recall": 1.0,
                "test_f1": 1.0,
                "test_dis_precision": 1.0,
                "test_dis_recall": 1.0,
                "test_dis_f1": 1.0,
                "test_chem_precision": 1.0,
                "test_chem_recall": 1.0,
                "test_chem_f1": 1.0,
            },
            both,
            both.tags,
            corpora="dis,chem",
        )
    rows = cell_rows(client, client.get_run(parent))
    assert sorted({(r["dataset"], r["variant"]) for r in rows}) == [
        ("both", "multi"),
        ("chem", "multi"),
        ("chem", "multi [both]"),
        ("dis", "multi"),
        ("dis", "multi [both]"),
    ]
    counts = Counts(client)
    summary = {(s["dataset"], s["variant"]): s for s in summarize(rows, None, counts)}
    better = summary[("dis", "multi [both]")]
    assert better["delta_f1"] > 0.3 and better["p_value"] < 0.05 and better["paired_seeds"] == 2
    same = summary[("chem", "multi [both]")]
    assert same["delta_f1"] == 0 and same["p_value"] == 1.0  # never better than an equal model
    assert summary[("dis", "multi")]["p_value"] is None  # no baseline variant in this sweep
    assert len(counts(rows[0]["run_id"])) in (n, 2 * n)

    # logged on the parent run too: "multi [both]" holds characters MLflow refuses in a metric name
    build_report("sweep", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report", parent)
    logged = client.get_run(parent).data.metrics
    from typer.testing import CliRunner

    from bioner.cli import app

    r = CliRunner().invoke(
        app,
        [
            "report",
            "--experiment",
            "sweep",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--out",
            str(tmp_path / "cli"),
            "--no-log",
        ],
        terminal_width=200,
    )
    assert r.exit_code == 0 and "multi [both]" in r.output, r.output  # printed as it is, not taken for markup
    assert logged["test_f1_mean/dis/f1/multi _both_"] == better["f1_mean"] and "p_value/dis/f1/multi _both_" in logged


def test_sweeps_of_one_grid_run_with_other_seeds_are_pooled(tmp_path):
    import pytest

    from bioner.errors import BionerError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("grid", artifact_location=(tmp_path / "art").as_uri())
    n = 20
    dis = Split("test", tmp_path, [["flu", "x"]] * n, [GOLD_D] * n, ["dis"] * n, [("Disease",)] * n)
    parents = []
    for seeds in ((42,), (43, 44)):  # the grid once with seed 42, then again with `--set seed=43 --set seeds=2`
        parent = client.create_run(exp, tags={KIND: Kind.SWEEP}).info.run_id
        for seed in seeds:
            f1 = 0.5 + seed / 1000
            _cell(
                client,
                exp,
                parent,
                tmp_path,
                "dis",
                seed,
                {"test_precision": f1, "test_recall": f1, "test_f1": f1},
                dis,
                dis.tags,
            )
        parents.append(parent)
    rep = build_report("grid", uri, tmp_path / "pooled", parents, log=False)
    (row,) = rep.tables["summary_raw"]
    assert row["seeds"] == 3 and row["f1_mean"] == pytest.approx(0.543)
    assert sorted(r["seed"] for r in rep.tables["runs"]) == [42, 43, 44]
    again = client.create_run(exp, tags={KIND: Kind.SWEEP}).info.run_id  # seed 43 run a second time
    _cell(
        client,
        exp,
        again,
        tmp_path,
        "dis",
        43,
        {"test_precision": 1.0, "test_recall": 1.0, "test_f1": 1.0},
        dis,
        dis.tags,
    )
    with pytest.raises(BionerError, match="seed 43 is in both"):
        build_report("grid", uri, tmp_path / "twice", [parents[1], again], log=False)
    with pytest.raises(BionerError, match="given twice"):
        build_report("grid", uri, tmp_path / "twice", [parents[1], parents[1]], log=False)
