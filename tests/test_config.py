import pytest

from bioner.config import FOREIGN_KEYS, TrainConfig, load_config, parse_overrides
from bioner.corpora import load_spec
from bioner.errors import ConfigError

from conftest import EXPERIMENTS


def _yamls(sub=""):
    return sorted((EXPERIMENTS / sub).rglob("*.yaml"))


@pytest.mark.parametrize("path", _yamls("datasets"), ids=lambda p: p.name)
def test_every_dataset_spec_loads(path):
    spec = load_spec(path)
    assert spec.corpus_dir.is_dir() and spec.types


@pytest.mark.parametrize("path", [p for p in _yamls() if "datasets" not in p.parts], ids=lambda p: p.name)
def test_every_experiment_config_validates(path):
    from bioner.config import read_yaml
    from bioner.tuning import TuneConfig

    if "paper" in path.parts or "variants" in read_yaml(path):  # sweep configs (the paper's: tests/test_paper_configs.py)
        from bioner.sweep import load_sweep

        load_sweep(path)
        return
    if "benchmarks" in path.parts:
        from bioner.bench import BenchConfig

        load_spec(load_config(BenchConfig, path).dataset)
        return
    cfg = load_config(TrainConfig, path, ignore=FOREIGN_KEYS)  # `bioner train` on any config
    load_spec(cfg.dataset)
    if FOREIGN_KEYS & set(read_yaml(path)):
        load_config(TuneConfig, path)  # `bioner tune` on a tune config


def test_set_parses_yaml_values_and_dotted_keys():
    assert parse_overrides(["train_fraction=0.1", "x=[1, 2]", "a.b=true", "s=hello"]) == {
        "train_fraction": 0.1, "x": [1, 2], "a": {"b": True}, "s": "hello"}


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
        load_config(TrainConfig, EXPERIMENTS / "quickstart.yaml", [override], ignore=FOREIGN_KEYS)


def test_alpha_and_beta_both_zero_is_an_error():
    with pytest.raises(ConfigError, match="alpha and beta are both 0"):
        load_config(TrainConfig, None, ["alpha=0", "beta=0"])


def test_set_overrides_the_file_and_tune_keys_are_ignored_by_train(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 5\nnum_samples: 8\nsearch:\n  alpha: [0, 1]\n")
    cfg = load_config(TrainConfig, p, ["epochs=2"], ignore=FOREIGN_KEYS)
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

    code = ("import mlflow; from bioner.config import TrainConfig; "
            "mlflow.set_tracking_uri('sqlite:///first-job.db'); "
            f"print(TrainConfig(output_dir={str(tmp_path)!r}).resolved_tracking_uri()); "
            "print(TrainConfig(tracking_uri='http://h:1').resolved_tracking_uri())")

    def run(**env):
        import os

        base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env}, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split()

    assert run(MLFLOW_TRACKING_URI="http://127.0.0.1:5000") == ["http://127.0.0.1:5000", "http://h:1"]
    assert run() == [f"sqlite:///{tmp_path / 'mlflow.db'}", "http://h:1"]
