"""A careless user, third round: a broken model folder given to `bioner extend`, `promote` asked
twice about the same version, and `mrc_types_per_sentence` written as the README says."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bioner.config import TrainConfig, load_config
from bioner.errors import BionerError, ConfigError

# --------------------------------------------------------------------------- extend: model folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny_bert):
    from bioner.model import build_model, load_tokenizer, save_model

    meta = {"labels": ["O", "B-Disease", "I-Disease"], "types": ["Disease"], "dataset": "toy", "encoder": tiny_bert,
            "max_length": 64, "dropout": 0.1, "multitask": False, "queries": None}
    folder = tmp_path_factory.mktemp("parent") / "model"
    return save_model(build_model(tiny_bert, 3), load_tokenizer(tiny_bert), folder, meta)


def _without_tokenizer_json(d):
    (d / "tokenizer.json").unlink()
    return "tokenizer.json"


def _truncated_weights(d):
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return "model.safetensors"


@pytest.mark.parametrize("breaks", [_without_tokenizer_json, _truncated_weights])
def test_extend_refuses_a_broken_model_folder_before_ray_or_a_run(breaks, model_folder, make_dataset, tmp_path,
                                                                  monkeypatch):
    import shutil

    import ray

    from bioner.studies import extend

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    missing = breaks(folder)
    ray_before = ray.is_initialized()

    def not_reached(*args, **kwargs):
        raise AssertionError("training started on a broken model folder")

    monkeypatch.setattr(extend, "run_training", not_reached)
    out = tmp_path / "out"
    with pytest.raises(BionerError) as e:
        extend.run_extend(str(folder), str(make_dataset("chem", types=("Chemical",))), [f"output_dir={out}"],
                          progress=False)
    msg = str(e.value)
    assert missing in msg and len(msg.splitlines()) == 1
    assert ray.is_initialized() == ray_before and not out.exists()  # no Ray start, no store, no run


# --------------------------------------------------------------------------- promote: champion == challenger


def test_promote_when_the_challenger_is_already_champion_changes_nothing(tmp_path, make_dataset):
    import mlflow
    from mlflow import MlflowClient

    from bioner.cli import app
    from bioner.tracking.registry import CHAMPION, model_name, promote, register_challenger

    spec = make_dataset("promo")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    source = tmp_path / "model"  # promotion without a champion to compare against never loads the model
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n", encoding="utf-8")
    mlflow.set_tracking_uri(uri)  # register_challenger registers in the process's store
    version = register_challenger(client, str(spec), str(source), "a version", {})
    name = model_name("promo")
    d = promote(str(spec), tracking_uri=uri, progress=False)
    assert d.promoted and d.changed and d.reason == "no champion yet"
    # as a real decision left them (a bootstrap on test, some time ago): a second look must not rewrite them
    client.set_model_version_tag(name, version, "promotion.time", "2020-01-01T00:00:00+00:00")
    client.set_model_version_tag(name, version, "promotion.reason", "challenger F1 0.8100 vs champion F1 0.7000")
    before = client.get_model_version(name, version).tags

    d = promote(str(spec), tracking_uri=uri, progress=False)
    assert d.promoted and not d.changed and "nothing changed" in d.reason and "no champion yet" not in d.reason
    r = CliRunner().invoke(app, ["promote", "--dataset", str(spec), "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    assert "nothing changed" in r.output and "no champion yet" not in r.output
    assert client.get_model_version(name, version).tags == before
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == version


# --------------------------------------------------------------------------- mrc_types_per_sentence


@pytest.mark.parametrize("value", ["all", "ALL", "null"])
def test_mrc_types_per_sentence_all_is_every_type(value):
    assert load_config(TrainConfig, None, [f"mrc_types_per_sentence={value}"]).mrc_types_per_sentence is None


def test_mrc_types_per_sentence_all_in_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mrc_types_per_sentence: all\n", encoding="utf-8")
    assert load_config(TrainConfig, path).mrc_types_per_sentence is None


@pytest.mark.parametrize("value", ["true", "false", "yes", "some"])
def test_mrc_types_per_sentence_refuses_a_boolean_or_a_word_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^mrc_types_per_sentence: .*whole number >= 1, or all"):
        load_config(TrainConfig, None, [f"mrc_types_per_sentence={value}"])


def test_mrc_types_per_sentence_set_with_beta_0_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="mrc_types_per_sentence has no effect with beta=0"):
        load_config(TrainConfig, None, ["beta=0", "mrc_types_per_sentence=1"])
    path = tmp_path / "c.yaml"
    path.write_text("beta: 0\nmrc_types_per_sentence: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: mrc_types_per_sentence has no effect with beta=0"):
        load_config(TrainConfig, path)
    # the default, said or not, is no mistake
    assert load_config(TrainConfig, None, ["beta=0", "mrc_types_per_sentence=all"]).beta == 0
    assert load_config(TrainConfig, None, ["beta=0"]).mrc_types_per_sentence is None


def test_a_study_that_tries_beta_0_keeps_its_mrc_types_per_sentence():
    """A search (or a sweep cell) sets beta per trial: a trial at beta=0 is not the user's mistake."""
    from bioner.studies.tune_config import TuneConfig

    cfg = load_config(TuneConfig, None, ["mrc_types_per_sentence=1"])
    trial = cfg.trial_config({"alpha": 1.0, "beta": 0.0, "learning_rate": 3e-5, "query_source": "none"})
    assert trial.beta == 0 and trial.mrc_types_per_sentence == 1
