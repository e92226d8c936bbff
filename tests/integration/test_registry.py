"""Registry, significance-gated promotion and serving, on real registered versions."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from bioner.cli import app
from bioner.data.specs import load_spec
from bioner.studies.training import run_training
from bioner.tracking.registry import promote, register_challenger

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def store(strong_run):
    """Two real trained runs on an easy corpus: one barely trained, one trained well (the session's
    strong run, conftest.strong_run), in the strong run's store."""
    spec, strong_cfg, strong, _ = strong_run
    weak = run_training(strong_cfg.train_config(epochs=1, learning_rate=1e-6), progress=False)
    uri = strong_cfg.resolved_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["BIONER_DATASETS"] = str(spec.parent)
    yield {"uri": uri, "weak": weak, "strong": strong, "spec": load_spec(spec)}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("BIONER_DATASETS", None)


def test_promotion_gate(store):
    client = MlflowClient(store["uri"])
    assert store["strong"].metrics["test_f1"] > store["weak"].metrics["test_f1"] + 0.2

    spec = store["spec"]  # registered with the hashes of its spec and corpus files; promotion scores exactly that
    v1 = register_challenger(client, spec, store["weak"].model_uri, "weak", {})
    d = promote("synth-reg", tracking_uri=store["uri"], progress=False)
    assert d.promoted and d.reason == "no champion yet"
    assert client.get_model_version_by_alias("bioner-synth-reg", "champion").version == int(v1)

    v2 = register_challenger(client, spec, store["strong"].model_uri, "strong", {})
    d = promote("synth-reg", tracking_uri=store["uri"], progress=False)
    assert d.promoted and d.p_value <= 0.05 and d.challenger_f1 > d.champion_f1
    assert client.get_model_version_by_alias("bioner-synth-reg", "champion").version == int(v2)
    tags = client.get_model_version("bioner-synth-reg", v2).tags
    assert tags["promotion.decision"] == "promoted" and float(tags["promotion.p_value"]) <= 0.05

    # an identical challenger is not better: refused, p near 1, champion unchanged
    v3 = register_challenger(client, spec, store["strong"].model_uri, "same again", {})
    r = CliRunner().invoke(app, ["promote", "--dataset", "synth-reg", "--tracking-uri", store["uri"]])
    assert r.exit_code == 1 and "refused" in r.stdout
    tags = client.get_model_version("bioner-synth-reg", v3).tags
    assert tags["promotion.decision"] == "refused" and float(tags["promotion.p_value"]) >= 0.95
    assert client.get_model_version_by_alias("bioner-synth-reg", "champion").version == int(v2)

    r = CliRunner().invoke(app, ["promote", "--dataset", "synth-reg", "--tracking-uri", store["uri"], "--force"])
    assert r.exit_code != 0  # --force without --reason
    r = CliRunner().invoke(
        app,
        [
            "promote",
            "--dataset",
            "synth-reg",
            "--tracking-uri",
            store["uri"],
            "--force",
            "--reason",
            "hotfix for a tokenizer bug",
        ],
    )
    assert r.exit_code == 0, r.output
    tags = client.get_model_version("bioner-synth-reg", v3).tags
    assert tags["promotion.forced"] == "true" and "hotfix for a tokenizer bug" in tags["promotion.reason"]
    assert client.get_model_version_by_alias("bioner-synth-reg", "champion").version == int(v3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_entities(store):
    client = MlflowClient(store["uri"])
    if not client.get_registered_model("bioner-synth-reg").aliases.get("champion"):
        pytest.skip("needs the promotion test's champion")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/bioner-synth-reg@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # the scoring server execs `uvicorn` by name: the venv's bin must be on PATH
        env={**os.environ, "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    texts = ["the patient was seen with lyme disease and flu", "no signs reported"]
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        "mlflow models serve did not come up: " + proc.stderr.read().decode()[-1500:]
                    ) from None
                time.sleep(1)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": texts}).encode(),
            headers={"Content-Type": "application/json"},
        )
        preds = json.loads(urllib.request.urlopen(req, timeout=60).read())["predictions"]
        bad = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=30)
        assert e.value.code == 400
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    assert len(preds) == 2
    for t, ents in zip(texts, preds, strict=True):
        for ent in ents:
            assert t[ent["start"] : ent["end"]] == ent["text"]
    assert any(e["text"] == "lyme disease" for e in preds[0])
    r = CliRunner().invoke(app, ["predict", "--model", "models:/bioner-synth-reg@champion", *texts])
    assert [json.loads(line)["entities"] for line in r.stdout.strip().splitlines()] == preds
