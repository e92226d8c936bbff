"""Shared fixtures. Ray starts at most once per test session (about 10 s a start)."""

from __future__ import annotations

import contextlib
import os
import sys

import pytest

from helpers import ncbi_subset, synthetic_corpus, write_spec

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray Train starts a preemption watcher per run (an actor, a process): the suite runs a hundred short
# fits on 2 cores, on clusters of its own too (`ray start`), where nothing is preempted. How often Ray
# Train looks at its workers is the platform's own default (bioner.train.local_ray).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@contextlib.contextmanager
def tracking_uri_variable_kept():
    """mlflow.set_tracking_uri() (and run_training) write $MLFLOW_TRACKING_URI, mlflow.set_registry_uri()
    $MLFLOW_REGISTRY_URI and MLflow's own default: put back what was there."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in names}
    registry = sys.modules.get("mlflow.tracking._model_registry.utils")
    registry_before = getattr(registry, "_registry_uri", None)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        registry = sys.modules.get("mlflow.tracking._model_registry.utils")
        if registry is not None:
            registry._registry_uri = registry_before


@pytest.fixture(autouse=True)
def _tracking_uri_variable_restored():
    """A test leaves $MLFLOW_TRACKING_URI as it found it, so that a later test's `bioner` child
    process does not log to this test's store."""
    with tracking_uri_variable_kept():
        yield


@pytest.fixture(scope="session")
def make_dataset(tmp_path_factory):
    """The one factory of test datasets: writes a corpus folder and its spec, returns the spec path.

    `source="synthetic"`: names of `types[0]` (Disease or Chemical) in filler text, which a tiny model learns
    in a few epochs (`sizes` = train/devel/test sentences, `seed`); `source="ncbi"`: the first sentences of the
    vendored NCBI-disease splits (`sizes[0]` train, `sizes[2]` test, half that devel). The spec is
    `<folder>/<name>.yaml` with its corpus in `<folder>/corpus`. Usable from fixtures of any scope.
    """

    def make(name: str = "synth", sizes=(48, 16, 16), source: str = "synthetic", seed: int = 0, types=("Disease",)):
        folder = tmp_path_factory.mktemp(name)
        if source == "synthetic":  # one entity type: the spec's first
            synthetic_corpus(folder / "corpus", sizes=sizes, seed=seed, entity=types[0])
        elif source == "ncbi":
            ncbi_subset(folder / "corpus", n_train=sizes[0], n_test=sizes[2])
        else:
            raise ValueError(f"source: synthetic or ncbi, not {source!r}")
        return write_spec(folder / f"{name}.yaml", "corpus", types=types, name=name)

    return make


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from bioner.model import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_tokenizer) -> str:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a local checkpoint."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    minilm_tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def strong_run(_ray_session, tmp_path_factory, make_dataset, tiny_bert):
    """The tiny BERT trained well (4 epochs, single-task) on an easy synthetic corpus, `synth-reg`, in a
    SQLite store of its own: the registry tests' strong run, and the model the serving tests register and
    serve (one Ray Train fit for both modules). Returns (spec, config, TrainResult, snapshot): `snapshot`
    is a copy of the store as the fit left it, for a test module to copy and change on its own."""
    import sqlite3
    from contextlib import closing

    from bioner.config import TrainConfig
    from bioner.studies.training import run_training

    _init_ray()  # restarted if an earlier test stopped the session's Ray (no_ray_in_process)
    spec = make_dataset("synth-reg", sizes=(200, 40, 200), seed=1)
    d = tmp_path_factory.mktemp("strong-run")
    cfg = TrainConfig(
        dataset=str(spec),
        encoder=tiny_bert,
        output_dir=str(d / "out"),
        experiment="registry",
        batch_size=16,
        max_length=64,
        beta=0.0,
        epochs=4,
        learning_rate=3e-3,
    )
    with tracking_uri_variable_kept():  # set up before any test's own keeper runs
        res = run_training(cfg, progress=False)
    snapshot = d / "snapshot.db"
    with closing(sqlite3.connect(d / "out" / "mlflow.db")) as src, closing(sqlite3.connect(snapshot)) as dst:
        src.backup(dst)
    return spec, cfg, res, snapshot


_haproxy_folders: list = []  # HAProxy's files of the session's Serve, removed at the end


def _init_ray():
    import ray

    if not ray.is_initialized():
        from bioner.serve.ingress import configure_local
        from bioner.train.local_ray import start_local_ray

        # Serve on this Ray gets the ingress `bioner serve` gives a local Ray by default (HAProxy on Linux).
        _haproxy_folders.append(configure_local("auto")[1])
        # The dashboard serves the State API that Ray Train uses to clean up finished trials.
        start_local_ray(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def _ray_session():
    yield _init_ray()
    import shutil

    import ray

    ray.shutdown()
    for folder in _haproxy_folders:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ray_local(_ray_session):
    """One local Ray for the session, reused by every trainer (restarted if a test stopped it)."""
    return _init_ray()


@pytest.fixture
def no_ray_in_process():
    """For tests that run `bioner` as a subprocess with its own Ray: two local instances on one
    machine confuse Ray Train's placement-group cleaner, so the in-process one is stopped first."""
    import ray

    ray.shutdown()
    yield
