import pytest

from bioner.bench.config import BenchConfig
from bioner.cli.common import load_command_config, other_commands_keys
from bioner.config import TrainConfig, load_config, parse_overrides
from bioner.data.specs import load_spec
from bioner.errors import ConfigError
from helpers import EXPERIMENTS


def _yamls(sub=""):
    return sorted((EXPERIMENTS / sub).rglob("*.yaml"))


@pytest.mark.parametrize("path", _yamls("datasets"), ids=lambda p: p.name)
def test_every_dataset_spec_loads(path):
    spec = load_spec(path)
    assert spec.types and all(m.corpus_dir.is_dir() for m in spec.members)


# Configs: every YAML but the dataset specs and the paper's reference figures (data, read by report).
@pytest.mark.parametrize(
    "path", [p for p in _yamls() if "datasets" not in p.parts and p.name != "reference_f1.yaml"], ids=lambda p: p.name
)
def test_every_experiment_config_validates(path):
    from bioner.config import read_yaml
    from bioner.studies.tune_config import TuneConfig

    if "paper" in path.parts or "variants" in read_yaml(
        path
    ):  # sweep configs (the paper's: tests/test_paper_configs.py)
        from bioner.studies.sweep_config import load_sweep

        load_sweep(path)
        return
    if "benchmarks" in path.parts:
        load_spec(load_config(BenchConfig, path).dataset)
        return
    cfg = load_command_config(TrainConfig, path, None)  # `bioner train` on any config
    load_spec(cfg.dataset)
    if other_commands_keys(TrainConfig) & set(read_yaml(path)):
        load_config(TuneConfig, path)  # `bioner tune` on a tune config


def test_set_parses_yaml_values_and_dotted_keys():
    assert parse_overrides(["train_fraction=0.1", "x=[1, 2]", "a.b=true", "s=hello"]) == {
        "train_fraction": 0.1,
        "x": [1, 2],
        "a": {"b": True},
        "s": "hello",
    }


@pytest.mark.parametrize(
    "override, key",
    [
        ("alpha=-0.1", "alpha"),
        ("learning_rate=0", "learning_rate"),
        ("train_fraction=1.5", "train_fraction"),
        ("train_fraction=0", "train_fraction"),
        ("epochs=two", "epochs"),
        ("query_source=wiki", "query_source"),
        ("bogus=1", "bogus: unknown key"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_command_config(TrainConfig, EXPERIMENTS / "quickstart.yaml", [override])


def test_alpha_and_beta_both_zero_is_an_error():
    with pytest.raises(ConfigError, match="alpha and beta are both 0"):
        load_config(TrainConfig, None, ["alpha=0", "beta=0"])


def test_other_commands_keys_come_from_their_configs_not_a_list():
    keys = other_commands_keys(TrainConfig)
    assert {"num_samples", "search", "variants", "profiles", "steps", "systems"} <= keys
    assert not keys & set(TrainConfig.model_fields)
    assert "steps" not in other_commands_keys(BenchConfig)


def test_set_overrides_the_file_and_tune_keys_are_ignored_by_train(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 5\nnum_samples: 8\nsearch:\n  alpha: [0, 1]\n")
    cfg = load_command_config(TrainConfig, p, ["epochs=2"])
    assert cfg.epochs == 2
    with pytest.raises(ConfigError, match="num_samples: unknown key"):
        load_config(TrainConfig, p)


def test_default_tracking_uri_is_sqlite_in_the_output_dir(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path))
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 1\nalpha: [1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: not valid YAML"):
        load_config(TrainConfig, p)


def test_tracking_uri_defaults_to_the_variable_as_the_process_found_it(tmp_path):
    # MLflow's convention: $MLFLOW_TRACKING_URI names the store. mlflow.set_tracking_uri() (every job
    # calls it) rewrites the variable, and a second job in the same process keeps its own default.
    import subprocess
    import sys

    code = (
        "import mlflow; from bioner.config import TrainConfig; "
        "mlflow.set_tracking_uri('sqlite:///first-job.db'); "
        f"print(TrainConfig(output_dir={str(tmp_path)!r}).resolved_tracking_uri()); "
        "print(TrainConfig(tracking_uri='http://h:1').resolved_tracking_uri())"
    )

    def run(**env):
        import os

        base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=120, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split()

    assert run(MLFLOW_TRACKING_URI="http://127.0.0.1:5000") == ["http://127.0.0.1:5000", "http://h:1"]
    assert run() == [f"sqlite:///{tmp_path / 'mlflow.db'}", "http://h:1"]
    # a relative store is the one in this process's folder, also for trials and workers that run elsewhere
    assert run(MLFLOW_TRACKING_URI="sqlite:///runs/x.db")[0] == f"sqlite:///{tmp_path.resolve() / 'runs' / 'x.db'}"


def test_a_relative_sqlite_store_is_made_absolute_with_its_query_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(tracking_uri="sqlite:///out/m.db?timeout=30")
    assert cfg.resolved_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'out' / 'm.db'}?timeout=30"
    assert TrainConfig(tracking_uri="sqlite:////abs/m.db").resolved_tracking_uri() == "sqlite:////abs/m.db"


def test_the_paper_reference_figures_are_data_read_by_the_report():
    from bioner.studies.report.paper import PaperF1

    paper = PaperF1(EXPERIMENTS / "paper" / "reference_f1.yaml")
    assert paper("ncbi-disease", 0.0, "none", 1.0) == 89.00  # the single-task baseline, whatever the query
    assert paper("bc5cdr-chem", 1.0, "wikipedia", 1.0) == 93.90
    assert paper("ncbi-disease", 1.0, "annotation", 0.1) == 82.08
    assert paper("ncbi-disease", 1.0, "wikipedia", 0.1) is None  # the paper has no such cell
    assert len(paper.table) == 3 * 6 + 3 * 2


def test_relative_model_and_encoder_folders_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    # Ray Train runs each worker in a folder of its own: `bioner extend --model outputs/models/<id>`
    # failed there with "not a bioner model folder" when init_from stayed relative.
    (tmp_path / "outputs" / "models" / "abc").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    cfg = load_config(TrainConfig, None, ["init_from=outputs/models/abc", "encoder=outputs/models/abc"])
    assert cfg.init_from == cfg.encoder == str(tmp_path / "outputs" / "models" / "abc")
    assert load_config(TrainConfig, None, ["encoder=minilm"]).encoder == "minilm"
