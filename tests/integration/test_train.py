"""Real Ray Train runs (local Ray, gloo DDP) tracked in a real SQLite MLflow store."""

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bioner.cli import app
from bioner.config import TrainConfig
from bioner.errors import CorpusError
from bioner.studies.training import run_training
from helpers import EXPERIMENTS, ncbi_subset, write_spec

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def toy_spec(make_dataset):
    return make_dataset("toy", sizes=(64, 12, 24), source="ncbi")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, toy_spec, tiny_bert):
    out = tmp_path_factory.mktemp("ddp")
    cfg = TrainConfig(
        dataset=str(toy_spec),
        encoder=tiny_bert,
        epochs=2,
        batch_size=8,
        learning_rate=1e-3,
        max_length=64,
        num_workers=2,
        cpus_per_worker=1,
        output_dir=str(out),
        experiment="ddp",
        query_source="dictionary",
    )
    return cfg, run_training(cfg, progress=False)


def test_two_worker_ddp_run_logs_every_metric_param_and_artifact(ddp_run):
    from mlflow import MlflowClient

    cfg, res = ddp_run
    client = MlflowClient(cfg.resolved_tracking_uri())
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    for key in TrainConfig.model_fields:
        assert key in run.data.params, key
    assert run.data.params["num_workers"] == "2"
    assert run.data.tags["bioner.precision"] == "fp32"  # what the step ran: a 32-wide encoder trains fp32 on any CPU
    for key in ("train_loss", "train_loss_ner", "train_loss_mrc", "sentences_per_s"):
        hist = client.get_metric_history(res.run_id, key)
        assert sorted(m.step for m in hist) == [1, 2], key  # once per epoch, no duplicates
    m = run.data.metrics
    for key in ("test_precision", "test_recall", "test_f1", "test_f1_Disease", "mrc_test_f1"):
        assert 0.0 <= m[key] <= 1.0, key
    arts = [a.path for a in client.list_artifacts(res.run_id, "predictions")]
    assert arts and arts[0].endswith(".test.tsv")
    lines = res.predictions.read_text().splitlines()
    assert lines[0] == "token\tgold\tpredicted\tcorpus" and lines[1].split("\t")[3] == "toy"
    queries = json.loads((res.model_dir / "bioner.json").read_text())["queries"]
    assert queries["source"] == "dictionary" and "{examples}" not in queries["texts"]["Disease"]["dictionary"]


def test_predict_loads_the_logged_model_by_mlflow_uri(ddp_run, monkeypatch):
    cfg, res = ddp_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.resolved_tracking_uri())
    text = "Familial adenomatous polyposis and breast cancer."
    r1 = CliRunner().invoke(app, ["predict", "--model", f"runs:/{res.run_id}/model", text])
    r2 = CliRunner().invoke(app, ["predict", "--model", str(res.model_dir), text])
    assert r1.exit_code == 0, r1.output
    line = json.loads(r1.stdout.strip().splitlines()[-1])
    assert line["text"] == text and r1.stdout == r2.stdout
    for e in line["entities"]:
        assert text[e["start"] : e["end"]] == e["text"]

    import mlflow.pyfunc

    pyf = mlflow.pyfunc.load_model(f"runs:/{res.run_id}/model")
    assert pyf.predict([text]) == [line["entities"]]


def test_evaluate_command_reproduces_the_logged_test_f1(ddp_run):
    cfg, res = ddp_run
    r = CliRunner().invoke(app, ["evaluate", "--model", str(res.model_dir), "--dataset", cfg.dataset])
    assert r.exit_code == 0, r.output
    f1 = float(re.search(r"test_f1\s+│\s+([0-9.]+)", r.stdout).group(1))
    assert f1 == pytest.approx(res.metrics["test_f1"], abs=1e-4)


@pytest.fixture(scope="module")
def two_types(tmp_path_factory, tiny_bert):
    """NCBI diseases split into two types (cancers vs the rest) by a spec and a corpus alone, and a run
    on them (also the first of the same-seed test's two runs: one Ray Train start-up fewer)."""
    tmp_path = tmp_path_factory.mktemp("two-types")
    base = ncbi_subset(tmp_path / "src", n_train=60, n_test=20)
    dst = tmp_path / "corpora" / "two-types"
    dst.mkdir(parents=True)
    cancer = re.compile(r"cancer|tumou?r|carcinoma|leukemia|neoplas", re.I)
    for split in ("train", "devel", "test"):
        sents = (base / f"{split}.tsv").read_text().split("\n\n")
        out = []
        for s in filter(None, (x.strip("\n") for x in sents)):
            rows = [r.split("\t") for r in s.split("\n")]
            typ = "Cancer" if any(cancer.search(w) for w, _ in rows) else "Disease"
            out.append("\n".join(f"{w}\t{t.replace('Disease', typ)}" for w, t in rows))
        (dst / f"{split}.tsv").write_text("\n\n".join(out) + "\n")
    spec = write_spec(
        tmp_path / "specs" / "two-types.yaml", "../corpora/two-types", types=("Disease", "Cancer"), name="two-types"
    )
    cfg = TrainConfig(
        dataset=str(spec),
        encoder=tiny_bert,
        epochs=1,
        batch_size=8,
        max_length=64,
        learning_rate=1e-3,
        output_dir=str(tmp_path / "out"),
        experiment="types",
        query_source="random",
    )
    return spec, cfg, run_training(cfg, progress=False)


@pytest.mark.smoke
def test_a_new_entity_type_needs_only_a_spec_and_a_corpus(two_types):
    """Split NCBI diseases into two types (cancers vs the rest) with no code change."""
    spec, _, res = two_types
    r = CliRunner().invoke(app, ["datasets", "check", str(spec)])
    assert r.exit_code == 0 and "Cancer" in r.stdout
    for key in ("test_f1", "test_f1_Disease", "test_f1_Cancer", "mrc_test_f1"):
        assert key in res.metrics
    meta = json.loads((res.model_dir / "bioner.json").read_text())
    assert meta["labels"] == ["O", "B-Disease", "I-Disease", "B-Cancer", "I-Cancer"]


def test_malformed_corpus_stops_before_any_run_is_written(tmp_path, tiny_bert):
    corpus = ncbi_subset(tmp_path / "c", n_train=10, n_test=5)
    with open(corpus / "train.tsv", "a") as f:
        f.write("bad line without tab\n")
    n = sum(1 for _ in open(corpus / "train.tsv"))
    spec = write_spec(tmp_path / "s.yaml", "c")
    out = tmp_path / "out"
    cfg = TrainConfig(dataset=str(spec), encoder=tiny_bert, output_dir=str(out))
    with pytest.raises(CorpusError) as e:
        run_training(cfg, progress=False)
    assert str(e.value) == f"{corpus / 'train.tsv'}:{n}: expected 2 tab-separated fields (token, tag), found 1"
    assert not (out / "mlflow.db").exists() and not (out / "models").exists()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bioner.cli",
            "train",
            str(EXPERIMENTS / "quickstart.yaml"),
            "--set",
            f"dataset={spec}",
            "--set",
            f"output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip() == str(e.value)
    assert not (out / "mlflow.db").exists()


def test_the_same_seed_repeats_a_cpu_run_exactly(tmp_path, two_types):
    """The two-types run again, same config and seed, in a store of its own: the same loss and F1."""
    from mlflow import MlflowClient

    def first_loss_and_f1(cfg, res):
        client = MlflowClient(cfg.resolved_tracking_uri())
        return client.get_metric_history(res.run_id, "train_loss")[0].value, res.metrics["test_f1"]

    _, cfg, first = two_types
    again_cfg = cfg.train_config(output_dir=str(tmp_path / "again"))
    again = run_training(again_cfg, progress=False)
    assert first_loss_and_f1(cfg, first) == first_loss_and_f1(again_cfg, again)


def test_the_processes_of_a_local_ray_poll_ray_train_workers_four_times_a_second():
    # Ray Train's default (2 s) made every run wait up to 2 s more at its end: 3.5 s of a tiny trial's 25 s
    import ray

    from bioner.train.local_ray import TRAIN_POLL_ENV

    @ray.remote(num_cpus=0)
    def seen() -> str | None:
        import os

        return os.environ.get(TRAIN_POLL_ENV)

    assert ray.get(seen.remote()) == "0.25"  # the suite's own conftest leaves it to the platform
