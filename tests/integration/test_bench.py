"""`bioner bench`: every system sees the same data; prediction systems agree on the entities."""

import json

import pytest
from typer.testing import CliRunner

from bioner.bench.config import HF_TRAINER, BenchConfig
from bioner.bench.train import bench_sentences, run_train_bench
from bioner.cli import app
from helpers import EXPERIMENTS, save_random_model


@pytest.fixture(scope="module")
def spec(make_dataset):
    return make_dataset("synth", sizes=(80, 10, 30))


def test_train_bench_systems_see_the_same_sentences(spec, tiny_bert, tmp_path, ray_local):
    cfg = BenchConfig(
        dataset=str(spec),
        encoder=tiny_bert,
        batch_size=8,
        max_length=64,
        steps=2,
        skip_steps=1,
        repeats=2,
        systems=["bioner single", "bioner multi", HF_TRAINER],
        out=str(tmp_path),
    )
    rep = run_train_bench(cfg, log=lambda m: None)
    res = rep["results"]
    single, multi, hf = res["bioner single"], res["bioner multi"], res[HF_TRAINER]
    for r in res.values():
        assert r["steps"] == 5 and r["sentences_all_steps"] == bench_sentences(cfg) == 40
        assert len(r["blocks"]) == 2 and r["sentences_per_s"] > 0 and 0 <= r["padding_fraction"] < 1
    # same sentences, same tokenizer: the same number of real tokens in our NER rows and in the HF rows
    assert single["tokens_all_steps"] == hf["tokens_all_steps"]
    # multi-task adds one MRC row (query + sentence) per sentence
    assert multi["tokens_all_steps"] > 2 * single["tokens_all_steps"]
    assert rep["ratios"]["bioner single (default) / HF Trainer (sentences/s)"] > 0
    # the precision each system trained in is recorded: fp32 for both (a 32-wide encoder trains fp32 on any CPU)
    assert single["precision"] == hf["precision"] == "fp32"


def test_predict_bench_finds_the_same_entities_as_pipeline_and_trainer(spec, tiny_bert, tmp_path, minilm_tokenizer):
    # a decisive random head: many entities, so agreement means something
    model = save_random_model(tmp_path / "model", tiny_bert, max_length=64, seed=3, head_scale=50, dataset="synth")
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        f"dataset: {spec}\nencoder: {tiny_bert}\nmodel: {model}\neval_split: test\nsentences: 30\nrepeats: 1\n"
        f"eval_batch_size: 8\nout: {tmp_path / 'out'}\n"
    )
    res = CliRunner().invoke(app, ["bench", "predict", str(cfg)])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert rep["entities_found"] > 10
    for name in ("pipeline", "Trainer.predict"):
        assert rep["agreement"][name] == {"texts_identical": 30, "texts": 30}
    assert rep["results"]["pipeline"]["padding_fraction"] == 0.0
    assert "bioner predict / pipeline (sentences/s)" in res.output


def test_fidelity_trains_both_systems_on_every_seed(spec, tiny_bert, tmp_path, ray_local):
    out = tmp_path / "fidelity.json"
    res = CliRunner().invoke(
        app,
        [
            "fidelity",
            str(EXPERIMENTS / "fidelity.yaml"),
            "--seeds",
            "2",
            "--out",
            str(out),
            "--set",
            f"dataset={spec}",
            "--set",
            f"encoder={tiny_bert}",
            "--set",
            "epochs=1",
            "--set",
            "batch_size=8",
            "--set",
            "max_length=64",
            "--set",
            f"output_dir={tmp_path / 'o'}",
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert [r["seed"] for r in rep["runs"]] == [42, 43]
    for r in rep["runs"]:
        assert 0 <= r["bioner"]["test_f1"] <= 1 and 0 <= r["hf"]["test_f1"] <= 1 and r["hf"]["train_seconds"] > 0
    assert "over 2 seed(s)" in res.output and "bioner - HF" in res.output


def test_random_encoder_has_the_named_geometry(tmp_path):
    res = CliRunner().invoke(app, ["bench", "random-encoder", str(tmp_path / "enc"), "--geometry", "minilm"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (384, 6) and (
        tmp_path / "enc" / "tokenizer.json"
    ).is_file()
    bad = CliRunner().invoke(app, ["bench", "random-encoder", str(tmp_path / "x"), "--geometry", "gpt"])
    assert bad.exit_code != 0
