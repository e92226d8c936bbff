"""Issue 17, second round: what a careless or hostile user still broke, without training.

Specs (duplicate types, query templates, type-name length), `--set` conflicts, model folders
(several under --model, missing tokenizer, truncated weights, wrong labels, an inflated
config.json), `predict --input` (line splitting, directories, devices, pipes, streaming, long
lines) and `promote` (the corpus a version was registered for, threshold, reason, no store).
Each case is refused with one line (exit 2) or handled; each test fails on the code before #17.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _faultkit import assert_refused, bioner, clean_env

from helpers import EXPERIMENTS, in_threads, save_random_model, synthetic_corpus, write_corpus, write_spec

SMALL = {"train": "flu\tB-Disease\nx\tO\n", "devel": "a\tO\n", "test": "a\tO\n"}


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_bert) -> Path:
    return save_random_model(tmp_path_factory.mktemp("model") / "m", tiny_bert, max_length=64)


def _spec(tmp_path: Path, body: str) -> Path:
    write_corpus(tmp_path / "corpus", SMALL)
    p = tmp_path / "spec.yaml"
    p.write_text("name: toy\ncorpus: corpus\n" + body, encoding="utf-8")
    return p


# --- 18. a type declared twice ------------------------------------------------------------------


def test_a_type_declared_twice_is_refused_with_both_line_numbers(tmp_path):
    spec = _spec(
        tmp_path,
        "entity_types:\n"
        "  Disease:\n    wikipedia: first\n    annotation: first\n"
        "  Disease:\n    wikipedia: second\n    annotation: second\n",
    )
    line = assert_refused(bioner("datasets", "check", str(spec)), "'Disease'", "lines 4 and 7")
    assert line.startswith(f"{spec}:7:")


# --- 7. query templates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "Entities like {examples} or {other} ?",
        "Entities like {examples} or {0} ?",
        "Entities like {examples} { ?",
        "Entities like {examples} and {examples.x} ?",
        "Entities like {{examples}} ?",
    ],
    ids=["other-field", "positional", "lone-brace", "attribute", "escaped-only"],
)
def test_a_dictionary_template_that_cannot_be_filled_is_refused_by_datasets_check(tmp_path, template):
    spec = _spec(
        tmp_path, f'entity_types:\n  Disease:\n    wikipedia: w\n    annotation: a\n    dictionary: "{template}"\n'
    )
    assert_refused(bioner("datasets", "check", str(spec)), "entity_types.Disease.dictionary")


def test_a_template_with_literal_braces_is_accepted(tmp_path):
    spec = _spec(
        tmp_path,
        "entity_types:\n  Disease:\n    wikipedia: w\n    annotation: a\n"
        '    dictionary: "Entities like {examples} {{in braces}} ?"\n',
    )
    o = bioner("datasets", "check", str(spec))
    assert o.code == 0, o.stderr


# --- 8. a very long type name --------------------------------------------------------------------


def test_a_245_character_type_name_is_refused_before_training(tmp_path):
    name = "D" * 245
    corpus = write_corpus(tmp_path / "corpus", {"train": f"flu\tB-{name}\nx\tO\n", "devel": "a\tO\n", "test": "a\tO\n"})
    spec = write_spec(tmp_path / "spec.yaml", str(corpus), types=(name,))
    assert_refused(bioner("datasets", "check", str(spec)), "245 characters", "at most 64")


def test_metric_names_are_cut_to_what_mlflow_takes():
    from bioner.tracking.metrics import metric_key

    a, b = metric_key("test_f1_" + "A" * 300), metric_key("test_f1_" + "A" * 299 + "B")
    assert len(a) == len(b) == 250 and a != b
    assert metric_key("test_f1_Disease") == "test_f1_Disease"


# --- 10. `--set epochs=1 --set epochs.x=2` -------------------------------------------------------


def test_a_set_that_reaches_into_a_value_is_one_line(tmp_path):
    o = bioner(
        "train",
        str(EXPERIMENTS / "quickstart.yaml"),
        "--set",
        f"output_dir={tmp_path}",
        "--set",
        "epochs=1",
        "--set",
        "epochs.x=2",
    )
    assert_refused(o, "--set epochs.x", "epochs is already set to 1")


# --- 2, 3, 15. model folders ---------------------------------------------------------------------


def test_predict_on_a_folder_of_several_models_names_them(tmp_path, model):
    for name in ("run-b", "run-a"):
        shutil.copytree(model, tmp_path / "models" / name)
    assert_refused(bioner("predict", "--model", str(tmp_path / "models"), "flu"), "holds 2 models", "run-a", "run-b")


def _broken_copy(model: Path, dst: Path, damage) -> Path:
    shutil.copytree(model, dst)
    damage(dst)
    return dst


def _edit_meta(**changes):
    def edit(d: Path):
        meta = json.loads((d / "bioner.json").read_text())
        meta.update(changes)
        (d / "bioner.json").write_text(json.dumps(meta))

    return edit


def _truncate(d: Path):
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")], "tokenizer.json"),
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json missing"),
        (_truncate, "model.safetensors: truncated"),
        (_edit_meta(num_labels=5), "num_labels is 5"),
        (_edit_meta(labels=["O", "B-Disease"]), "labels ['O', 'B-Disease']"),
        (_edit_meta(max_length=1024), "max_length 1024 is more than the encoder's 512 positions"),
    ],
    ids=["no-tokenizer", "no-tokenizer-json", "truncated-weights", "num-labels", "short-labels", "max-length"],
)
def test_a_damaged_model_folder_is_one_line_naming_what(tmp_path, model, damage, needle):
    d = _broken_copy(model, tmp_path / "m", damage)
    assert_refused(bioner("predict", "--model", str(d), "Breast cancer and flu ."), str(d), needle)


def test_an_inflated_config_is_refused_before_the_network_is_built(tmp_path, model):
    """hidden_size 16384 and 48 layers in config.json: about 200 GB of weights if built. The load runs
    under an address-space limit of 3 GiB above what the process has mapped once everything is
    imported: building the network would fail there; comparing shapes first refuses in one line."""
    d = tmp_path / "m"
    shutil.copytree(model, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(hidden_size=16384, num_hidden_layers=48, num_attention_heads=16)
    (d / "config.json").write_text(json.dumps(cfg))
    code = (
        "import resource, sys, torch, transformers, bioner.cli, bioner.model.io\n"
        "vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize:')) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))\n"
        f"sys.argv = ['bioner', 'predict', '--model', {str(d)!r}, 'flu']\n"
        "bioner.cli.main()\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1"),
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "config.json does not match model.safetensors" in lines[0] and "16384" in lines[0]


# --- 4, 11, 19. predict --input -----------------------------------------------------------------


def _records(o) -> list[dict]:
    assert o.code == 0, o.stderr[-2000:]
    return [json.loads(line) for line in o.stdout.splitlines()]


def test_input_lines_split_only_at_newlines(tmp_path, model):
    lines = ["page one\fpage two", "line\u2028separator and flu", "group\x1dseparator", "windows line"]
    f = tmp_path / "in.txt"
    f.write_bytes(("\n".join(lines[:3]) + "\n" + lines[3] + "\r\n").encode("utf-8"))
    recs = _records(bioner("predict", "--model", str(model), "--input", str(f)))
    assert [r["text"] for r in recs] == lines


def test_input_that_is_a_directory_or_an_empty_device_says_what_it_is(tmp_path, model):
    assert_refused(bioner("predict", "--model", str(model), "--input", str(tmp_path)), "is a directory")
    assert_refused(
        bioner("predict", "--model", str(model), "--input", "/dev/null"), "nothing to tag", "character device"
    )
    assert_refused(bioner("predict", "--model", str(model), "--input", str(tmp_path / "nope.txt")), "file not found")


def test_input_from_a_pipe_as_a_process_substitution_gives_it(model):
    r, w = os.pipe()
    texts = [f"patient {i} has flu" for i in range(5)]

    def feed():
        with os.fdopen(w, "w") as f:
            f.write("\n".join(texts) + "\n")

    try:
        with in_threads(feed):
            recs = _records(bioner("predict", "--model", str(model), "--input", f"/dev/fd/{r}"))
    finally:
        os.close(r)
    assert [x["text"] for x in recs] == texts


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_predict_streams_stdin_before_it_ends(model, source):
    """300 lines in, stdin left open: the first records come out while the input is still open
    (reading everything first wrote nothing until the end)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "bioner.cli", "predict", "--model", str(model), "--input", source],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        p.stdin.write("".join(f"the patient {i} was seen with flu\n" for i in range(300)).encode())
        p.stdin.flush()
        ready, _, _ = select.select([p.stdout], [], [], 180)
        assert ready, "no output while stdin is open"
        first = json.loads(p.stdout.readline())
        assert first["text"] == "the patient 0 was seen with flu"
        p.stdin.write(b"last line\n")
        p.stdin.close()
        rest = p.stdout.read().decode().splitlines()
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert len(rest) == 300 and json.loads(rest[-1])["text"] == "last line"


def test_a_line_over_the_character_limit_is_refused_before_any_output(tmp_path, model, monkeypatch):
    monkeypatch.setenv("BIONER_MAX_TEXT_CHARS", "50")
    f = tmp_path / "in.txt"
    f.write_text("short and fine\n" + "flu " * 20 + "\n")
    o = bioner("predict", "--model", str(model), "--input", str(f))
    assert_refused(o, f"--input {f}:2", "80 characters", "limit of 50", "BIONER_MAX_TEXT_CHARS")
    assert o.stdout == ""
    assert_refused(bioner("predict", "--model", str(model), "flu " * 20), "TEXT argument 1", "limit of 50")


# --- 17. promote's arguments and a missing store ------------------------------------------------


@pytest.mark.parametrize("threshold", ["2", "-1", "nan", "0", "1"])
def test_promote_threshold_must_be_a_p_value(tmp_path, threshold):
    assert_refused(
        bioner(
            "promote",
            "--dataset",
            "ncbi-disease",
            "--threshold",
            threshold,
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ),
        f"--threshold {float(threshold)}",
        "between 0 and 1",
    )


def test_promote_force_with_a_blank_reason_is_refused(tmp_path):
    assert_refused(
        bioner(
            "promote",
            "--dataset",
            "ncbi-disease",
            "--force",
            "--reason",
            "  ",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ),
        "--force needs --reason",
    )


def test_promote_where_there_is_no_store_creates_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert_refused(bioner("promote", "--dataset", "ncbi-disease"), "no MLflow store at", "mlflow.db")
    assert not (tmp_path / "outputs").exists()


# --- 1. promote scores exactly the registered corpus ---------------------------------------------


@pytest.fixture
def registry(tmp_path, make_dataset, tiny_bert):
    """A SQLite store with `register(n)`: n new random-model versions of bioner-promo registered."""
    import mlflow
    from mlflow import MlflowClient

    from bioner.data.specs import load_spec
    from bioner.tracking.models import log_model
    from bioner.tracking.registry import register_challenger
    from bioner.tracking.store import use_experiment

    spec = make_dataset("promo", sizes=(24, 8, 16))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = use_experiment(uri, "promo", tmp_path)

    def register(k: int) -> str:
        folder = save_random_model(tmp_path / f"m{k}", tiny_bert)
        with mlflow.start_run(experiment_id=exp):
            info = log_model(folder)
        return register_challenger(MlflowClient(uri), load_spec(spec), info.model_uri, f"v{k}", {})

    return spec, uri, register


def test_promote_scores_the_spec_it_is_given_and_refuses_another_corpus(tmp_path, registry, monkeypatch):
    spec, uri, register = registry
    register(1)
    o = bioner("promote", "--dataset", str(spec), "--tracking-uri", uri)
    assert o.code == 0 and "no champion yet" in o.stdout, o.stderr
    register(2)
    o = bioner("promote", "--dataset", str(spec), "--tracking-uri", uri)  # was: "dataset 'promo' not found"
    assert o.code in (0, 1) and "paired bootstrap p" in o.stdout, o.stderr
    # Elsewhere, a spec of the same name over another corpus: refused, not scored.
    other = tmp_path / "elsewhere"
    synthetic_corpus(other / "experiments" / "datasets" / "corpus", sizes=(24, 8, 16), seed=7)
    write_spec(other / "experiments" / "datasets" / "promo.yaml", "corpus", name="promo")
    monkeypatch.chdir(other)
    monkeypatch.delenv("BIONER_DATASETS", raising=False)
    o = bioner("promote", "--dataset", "promo", "--tracking-uri", uri)
    assert_refused(o, "differ(s) from what bioner-promo version 2 (challenger) was registered with", "test")
    # The registered corpus edited in place: refused as well.
    test_file = spec.parent / "corpus" / "test.tsv"
    test_file.write_text(test_file.read_text() + "\nflu\tB-Disease\n")
    assert_refused(bioner("promote", "--dataset", str(spec), "--tracking-uri", uri), "test differ(s)")


def test_the_corpus_hashes_are_recorded_on_the_version(registry):
    from mlflow import MlflowClient

    from bioner.data.specs import content_hashes, load_spec

    spec, uri, register = registry
    v = register(1)
    tags = MlflowClient(uri).get_model_version("bioner-promo", v).tags
    hashes = content_hashes(load_spec(spec))
    assert {k: tags[f"corpus.{k}_sha256"] for k in hashes} == hashes and set(hashes) == {
        "spec",
        "train",
        "devel",
        "test",
    }


# --- a spec by name, predict and evaluate arguments, serve --model, runs compare ------------------------------------


def test_a_spec_found_by_name_in_the_working_folder_reaches_the_ray_worker(tmp_path, monkeypatch, ray_local, tiny_bert):
    """`--set dataset=NAME` for a spec in ./experiments/datasets of the working folder: Ray Train runs
    each worker in a folder of its own, so the driver hands the workers the spec it found."""
    work = tmp_path / "work"
    synthetic_corpus(work / "experiments" / "corpora" / "mine", sizes=(16, 8, 8))
    write_spec(work / "experiments" / "datasets" / "my-spec.yaml", "../corpora/mine", name="my-spec")
    monkeypatch.chdir(work)
    monkeypatch.delenv("BIONER_DATASETS", raising=False)
    o = bioner(
        "train",
        str(EXPERIMENTS / "quickstart.yaml"),
        "--quiet",
        "--set",
        "dataset=my-spec",
        "--set",
        f"encoder={tiny_bert}",
        "--set",
        f"output_dir={tmp_path / 'out'}",
        "--set",
        "epochs=1",
        "--set",
        "beta=0",
        "--set",
        "max_length=64",
        "--set",
        "batch_size=8",
        "--set",
        "train_fraction=1",
        "--set",
        "experiment=by-name",
    )
    assert o.code == 0, (o.stdout + o.stderr)[-3000:]
    assert "MLflow run:" in o.stdout and "Traceback" not in o.stderr


@pytest.fixture
def no_model_load(monkeypatch):
    """The model must not load: each case here is refused by its arguments alone."""
    from bioner.infer.tagger import Tagger

    def not_reached(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(Tagger, "load", not_reached)


@pytest.fixture
def documents_input(tmp_path) -> Path:
    f = tmp_path / "docs.txt"
    f.write_text("Flu and gout were seen.\n", encoding="utf-8")
    return f


@pytest.mark.parametrize("types", ["", ",", " , "])
def test_predict_types_that_name_no_type_are_refused(model, no_model_load, documents_input, types):
    """`--types ""` names no type: an answer with no entities would look like a model that found none."""
    assert_refused(
        bioner("predict", "--model", str(model), "--types", types, "flu"), f"--types {types!r}", "names no type"
    )
    assert_refused(
        bioner("predict", "--model", str(model), "--types", types, "--format", "text", "--input", str(documents_input)),
        "--types",
        "names no type",
    )


@pytest.mark.parametrize("n", ["0", "-3"])
def test_a_batch_size_below_1_is_refused_by_predict_and_evaluate(model, no_model_load, make_dataset, n):
    assert_refused(
        bioner("predict", "--model", str(model), "--batch-size", n, "flu"), f"--batch-size {n}", "at least 1"
    )
    assert_refused(
        bioner("evaluate", "--model", str(model), "--dataset", str(make_dataset("bs")), "--batch-size", n),
        f"--batch-size {n}",
        "at least 1",
    )


def test_argument_errors_come_before_the_model_loads(model, no_model_load, make_dataset, documents_input):
    """Arguments that need no model are refused before it loads (an int8 model is built first); the types
    come from the folder's bioner.json alone."""
    assert_refused(bioner("predict", "--model", str(model), "--precision", "bf16", "flu"), "--precision 'bf16'", "int8")
    assert_refused(
        bioner("evaluate", "--model", str(model), "--dataset", str(make_dataset("prec")), "--precision", "bf16"),
        "--precision 'bf16'",
    )
    assert_refused(
        bioner("predict", "--model", str(model), "--types", "Disease,Gene", "flu"),
        "--types Gene",
        "not known to this model",
        "Disease",
    )
    assert_refused(
        bioner(
            "predict", "--model", str(model), "--types", "Gene", "--format", "text", "--input", str(documents_input)
        ),
        "--types Gene",
        "not known to this model",
    )
    chem = make_dataset("chem-only", types=("Chemical",))
    assert_refused(bioner("evaluate", "--model", str(model), "--dataset", str(chem)), "none of its types (Chemical)")


def test_a_byte_order_mark_before_the_first_line_is_not_text(tmp_path, model):
    """An editor's UTF-8 BOM is not text: left in, it would move every offset of the first line by one."""
    f = tmp_path / "in.txt"
    f.write_bytes(b"\xef\xbb\xbfflu and gout were seen\r\nmeasles\n")
    recs = _records(bioner("predict", "--model", str(model), "--input", str(f), "--precision", "fp32"))
    assert [r["text"] for r in recs] == ["flu and gout were seen", "measles"]
    assert all(r["text"][e["start"] : e["end"]] == e["text"] for r in recs for e in r["entities"])


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json missing"),
        (_truncate, "model.safetensors: truncated"),
        (_edit_meta(max_length=1024), "max_length 1024 is more than the encoder's 512 positions"),
    ],
    ids=["no-tokenizer-json", "truncated-weights", "max-length"],
)
def test_serve_refuses_a_broken_model_folder_before_ray_starts(tmp_path, model, damage, needle, monkeypatch):
    """`serve --model` checks a folder as predict does: one line, not replicas that fail to start."""
    from bioner.serve import deploy

    def not_reached():
        raise AssertionError("Ray started for a broken model folder")

    monkeypatch.setattr(deploy, "ensure_ray", not_reached)
    d = _broken_copy(model, tmp_path / "m", damage)
    assert_refused(bioner("serve", "--model", str(d), "--port", "8765"), str(d), needle)


def test_runs_compare_shows_run_names_whole_on_an_80_column_terminal(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from rich.console import Console

    from bioner.cli import models
    from bioner.studies.tags import KIND, Kind

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("cmp", artifact_location=str(tmp_path / "artifacts"))
    names = [f"trial-{k}-" + "abcdefghij" * 8 + f"-{k}" for k in range(2)]
    for k, name in enumerate(names):
        run = client.create_run(exp, run_name=name, tags={KIND: Kind.TRIAL})
        for p, v in {"alpha": 1.0, "beta": 0.5, "learning_rate": 3e-5, "query_source": "annotation"}.items():
            client.log_param(run.info.run_id, p, v)
        client.log_metric(run.info.run_id, "devel_f1", 0.5 + k / 10)
        client.set_terminated(run.info.run_id, "FINISHED")
    monkeypatch.setattr(models, "out", Console(width=80))
    o = bioner("runs", "compare", "--experiment", "cmp", "--tracking-uri", uri)
    assert o.code == 0, o.stderr
    for name in names:
        assert name in o.stdout, o.stdout
    assert o.stdout.index(names[1]) < o.stdout.index(names[0])  # best devel F1 first
