"""One model for the types of several corpora (real Ray, real MLflow, tiny BERT): a composite spec
trains, is scored per corpus, registers and predicts every type; a disease model is extended with
a chemical corpus and registered with its parent's URI."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from bioner.cli import app
from bioner.config import TrainConfig
from bioner.infer.tagger import Tagger
from bioner.studies.extend import PARENT_MODEL, run_extend
from bioner.studies.training import run_training
from bioner.tracking.registry import model_name, register_challenger

pytestmark = pytest.mark.usefixtures("ray_local")
MIXED = "the patient was treated with aspirin for flu and gout ."
COMMON = dict(batch_size=16, max_length=48, learning_rate=2e-3, query_source="annotation")


@pytest.fixture(scope="module")
def corpora(make_dataset, tmp_path_factory):
    dis = make_dataset("dis", sizes=(160, 16, 40), types=("Disease",))
    chem = make_dataset("chem", sizes=(160, 16, 40), types=("Chemical",), seed=1)
    both = tmp_path_factory.mktemp("both") / "both.yaml"
    both.write_text(f"name: both\ncorpora: [{dis}, {chem}]\n")
    return dis, chem, both


@pytest.fixture(scope="module")
def composite(corpora, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("composite")
    cfg = TrainConfig(
        dataset=str(corpora[2]), encoder=tiny_bert, epochs=4, output_dir=str(out), experiment="composite", **COMMON
    )
    return cfg, run_training(cfg, progress=False)


def test_a_composite_model_is_scored_per_corpus_on_its_own_types(composite):
    cfg, res = composite
    m = res.metrics
    for key in ("test_f1", "test_f1_Disease", "test_f1_Chemical", "test_dis_f1", "test_chem_f1", "mrc_test_f1"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["test_dis_f1"] > 0.5 and m["test_chem_f1"] > 0.5  # both corpora learned
    meta = json.loads((res.model_dir / "bioner.json").read_text())
    assert meta["types"] == ["Disease", "Chemical"] and [c["name"] for c in meta["corpora"]] == ["dis", "chem"]


def test_a_composite_model_registers_and_predicts_every_type(composite, monkeypatch):
    cfg, res = composite
    uri = cfg.resolved_tracking_uri()
    version = register_challenger(MlflowClient(uri), cfg.dataset, res.model_uri, "both types", {})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = CliRunner().invoke(app, ["predict", "--model", f"models:/{model_name('both')}/{version}", MIXED])
    assert r.exit_code == 0, r.output
    found = {(e["text"], e["type"]) for e in json.loads(r.stdout.strip().splitlines()[-1])["entities"]}
    assert {("aspirin", "Chemical"), ("flu", "Disease")} <= found
    only = CliRunner().invoke(app, ["predict", "--model", str(res.model_dir), "--types", "Chemical", MIXED])
    chemicals = json.loads(only.stdout.strip().splitlines()[-1])["entities"]
    assert {e["type"] for e in chemicals} == {"Chemical"}
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/{model_name('both')}/{version}")  # what `mlflow models serve` answers
    assert served.predict([MIXED], params={"types": ["Chemical"]}) == [chemicals]
    assert served.predict([MIXED]) == [json.loads(r.stdout.strip().splitlines()[-1])["entities"]]
    bad = CliRunner().invoke(app, ["predict", "--model", str(res.model_dir), "--types", "Gene", MIXED])
    assert bad.exit_code != 0


def test_evaluate_scores_a_corpus_the_model_never_saw(composite, corpora, tiny_bert, tmp_path):
    """Cross-corpus: the disease corpus alone, scored with the composite model, on Disease only."""
    _, res = composite
    r = CliRunner().invoke(app, ["evaluate", "--model", str(res.model_dir), "--dataset", str(corpora[0])])
    assert r.exit_code == 0, r.output
    assert "test_f1_Disease" in r.stdout and "test_f1_Chemical" not in r.stdout


def test_a_disease_model_extended_with_chemicals_keeps_diseases(corpora, tiny_bert, tmp_path, monkeypatch):
    dis, chem, _ = corpora
    out = tmp_path / "out"
    cfg = TrainConfig(dataset=str(dis), encoder=tiny_bert, epochs=3, output_dir=str(out), experiment="dis", **COMMON)
    parent = run_training(cfg, progress=False)
    monkeypatch.setenv("BIONER_DATASETS", str(dis.parent))  # the parent's corpus, found by the name it records
    ext = run_extend(
        str(parent.model_dir),
        str(chem),
        [f"output_dir={out}", "epochs=3", "batch_size=16", "learning_rate=2e-3"],
        progress=False,
    )
    assert ext.added == ["Chemical"] and ext.types == ["Disease", "Chemical"] and ext.name == "dis+chem"
    meta = json.loads((ext.result.model_dir / "bioner.json").read_text())
    assert meta["labels"] == ["O", "B-Disease", "I-Disease", "B-Chemical", "I-Chemical"]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert client.get_run(ext.result.run_id).data.tags[PARENT_MODEL] == str(parent.model_dir)
    mv = client.get_model_version(model_name("dis+chem"), ext.version)
    assert "Disease, Chemical" in mv.description
    assert ext.result.metrics["test_dis_f1"] > 0.5 and ext.result.metrics["test_chem_f1"] > 0.5
    found = {e["type"] for e in Tagger.load(ext.result.model_dir).entities([MIXED])[0]}
    assert found == {"Disease", "Chemical"}
