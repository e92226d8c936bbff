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

    meta = {
        "labels": ["O", "B-Disease", "I-Disease"],
        "types": ["Disease"],
        "dataset": "toy",
        "encoder": tiny_bert,
        "max_length": 64,
        "dropout": 0.1,
        "multitask": False,
        "queries": None,
    }
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
def test_extend_refuses_a_broken_model_folder_before_ray_or_a_run(breaks, model_folder, make_dataset, tmp_path):
    import shutil

    import ray

    from bioner.studies import extend

    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    missing = breaks(folder)
    ray_before = ray.is_initialized()

    out = tmp_path / "out"
    with pytest.raises(BionerError) as e:
        extend.run_extend(
            str(folder), str(make_dataset("chem", types=("Chemical",))), [f"output_dir={out}"], progress=False
        )
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


# --------------------------------------------------------------------------- a spec found by name
# (its hand-off to trials, sweep cells and Ray Train workers: tests/integration/test_spec_by_name.py)


@pytest.fixture
def spec_by_name_here(tmp_path, monkeypatch):
    """A spec that only the working folder's experiments/datasets has, and a second folder to move to."""
    from helpers import synthetic_corpus, write_spec

    work = tmp_path / "work"
    synthetic_corpus(work / "experiments" / "corpora" / "mine", sizes=(16, 8, 8))
    write_spec(work / "experiments" / "datasets" / "my-spec.yaml", "../corpora/mine", name="my-spec")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("BIONER_DATASETS", raising=False)
    monkeypatch.chdir(work)
    return work, elsewhere


# --------------------------------------------------------------------------- specs: type case, cycles, member names


def _typed_spec(folder, name: str, *types: str):
    from helpers import write_corpus, write_spec

    tags = "".join(f"x{i}\tB-{t}\n" for i, t in enumerate(types))
    write_corpus(folder / f"{name}-corpus", {s: tags for s in ("train", "devel", "test")})
    return write_spec(folder / f"{name}.yaml", f"{name}-corpus", types=types, name=name)


def test_type_names_that_differ_only_in_case_are_refused_in_a_spec(tmp_path):
    from bioner.data.specs import load_spec

    spec = _typed_spec(tmp_path, "both", "Disease", "disease")
    with pytest.raises(ConfigError, match=r"'Disease' and 'disease' differ only in case") as e:
        load_spec(spec)
    assert str(e.value).startswith(f"{spec}: ") and len(str(e.value).splitlines()) == 1


def test_type_names_that_differ_only_in_case_are_refused_across_a_composite(tmp_path):
    from bioner.data.specs import load_spec

    _typed_spec(tmp_path, "upper", "Disease")
    _typed_spec(tmp_path, "lower", "disease", "Chemical")
    both = tmp_path / "both.yaml"
    both.write_text("name: both\ncorpora: [upper.yaml, lower.yaml]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"type 'Disease' of upper and 'disease' of lower differ only in case"):
        load_spec(both)


def test_a_cycle_of_composite_specs_is_named_link_by_link(tmp_path):
    from bioner.data.specs import load_spec

    _typed_spec(tmp_path, "dis", "Disease")
    (tmp_path / "a.yaml").write_text("name: a\ncorpora: [dis.yaml, b.yaml]\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("name: b\ncorpora: [c.yaml]\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text("name: c\ncorpora: [a.yaml]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cycle of composite specs: a\.yaml -> b\.yaml -> c\.yaml -> a\.yaml$"):
        load_spec(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"cycle of composite specs: b\.yaml -> c\.yaml -> a\.yaml -> b\.yaml$"):
        load_spec(tmp_path / "b.yaml")


def test_two_members_of_one_name_are_refused(tmp_path):
    from bioner.data.specs import load_spec

    first = _typed_spec(tmp_path / "one", "dis", "Disease")
    second = _typed_spec(tmp_path / "two", "dis", "Disease")
    both = tmp_path / "both.yaml"
    both.write_text(f"name: both\ncorpora: [{first}, {second}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"two members are named 'dis'") as e:
        load_spec(both)
    assert str(first) in str(e.value) and str(second) in str(e.value)
    # one spec named twice (directly, or through a nested composite) is still one member
    (tmp_path / "inner.yaml").write_text(f"name: inner\ncorpora: [{first}]\n", encoding="utf-8")
    (tmp_path / "again.yaml").write_text(f"name: again\ncorpora: [{first}, inner.yaml, {first}]\n", encoding="utf-8")
    assert [m.name for m in load_spec(tmp_path / "again.yaml").members] == ["dis"]


def test_extend_refuses_an_added_type_that_differs_only_in_case(model_folder, tmp_path):
    from bioner.studies import extend

    add = _typed_spec(tmp_path, "lower", "disease", "Chemical")
    out = tmp_path / "out"
    with pytest.raises(BionerError) as e:
        extend.run_extend(str(model_folder), str(add), [f"output_dir={out}"], progress=False)
    msg = str(e.value)
    assert msg.startswith(f"--add {add}: ") and "'disease'" in msg and "'Disease'" in msg and len(msg.splitlines()) == 1
    assert not out.exists()  # no store, no run, no training


# --------------------------------------------------------------------------- predict --input: a byte-order mark


def test_a_byte_order_mark_is_dropped_from_the_first_line_only(tmp_path):
    import io

    from bioner.cli.text_input import lines, open_input

    got = list(lines(io.BytesIO(b"\xef\xbb\xbfflu here\r\n\xef\xbb\xbfsecond\n"), "x", 100))
    assert got == ["flu here", "\ufeffsecond"]  # a mark inside the text is the text's
    f = tmp_path / "in.txt"
    f.write_bytes(b"\xef\xbb\xbfgout\n")
    it, empty = open_input(f, 100)
    assert empty is None and list(it) == ["gout"]


# --------------------------------------------------------------------------- int8: no warnings on normal use


def test_building_the_int8_model_warns_nothing(model_folder, tmp_path, capfd):
    """torch's ONNX exporter warns of advanced indexing with negative indices (ours are aranges) and of its
    own deprecation (the TorchScript exporter is chosen on purpose): nothing a user can act on."""
    import warnings

    from bioner.infer.int8 import build_int8
    from bioner.model import load_model

    model, _, _ = load_model(model_folder)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        build_int8(model, tmp_path / "ner.int8.onnx")
    assert [f"{w.category.__name__}: {w.message}" for w in seen] == []
    assert capfd.readouterr().err == ""
    assert (tmp_path / "ner.int8.onnx").stat().st_size > 0


def test_a_spec_named_from_the_starting_folder_is_found_after_the_process_leaves_it(spec_by_name_here):
    """A Ray job's driver leaves its folder once Ray starts (train.local_ray.leave_job_folder); what runs after
    the training (the sample prediction, the registered name) finds the spec by name again."""
    import subprocess
    import sys

    work, elsewhere = spec_by_name_here
    code = (
        "import os, sys\nfrom bioner.data.specs import load_spec\nos.chdir(sys.argv[1])\n"
        "print(load_spec('my-spec').path)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(elsewhere)], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str((work / "experiments" / "datasets" / "my-spec.yaml").resolve())
