"""Shared fixtures. Ray starts at most once per test session (about 10 s a start)."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
NCBI = EXPERIMENTS / "corpora" / "NCBI-disease"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _tracking_uri_variable_restored():
    """mlflow.set_tracking_uri() writes $MLFLOW_TRACKING_URI: a test leaves it as it found it, so
    that a later test's `bioner` child process does not log to this test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


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


def _init_ray():
    import ray

    if not ray.is_initialized():
        from bioner.training import start_local_ray

        # The dashboard serves the State API that Ray Train uses to clean up finished trials.
        start_local_ray(num_cpus=2, logging_level="ERROR", log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def _ray_session():
    yield _init_ray()
    import ray

    ray.shutdown()


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


def write_corpus(folder: Path, splits: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in splits.items():
        (folder / f"{name}.tsv").write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def write_spec(path: Path, corpus: str, types=("Disease",), name: str = "toy") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"corpus: {corpus}", "entity_types:"]
    for t in types:
        lines += [
            f"  {t}:",
            f'    wikipedia: "A {t.lower()} is a thing."',
            f'    annotation: "A {t.lower()} entity is a mention of a {t.lower()}."',
            '    dictionary: "Can you detect entities like {examples} ?"',
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ncbi_subset(dst: Path, n_train: int, n_test: int) -> Path:
    """The first sentences of each NCBI-disease split, as a corpus folder."""
    from bioner.corpora import iter_sentences

    dst.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("devel", max(1, n_test // 2)), ("test", n_test)):
        with open(dst / f"{split}.tsv", "w", encoding="utf-8") as f:
            for i, (toks, tags) in enumerate(iter_sentences(NCBI / f"{split}.tsv", ["Disease"])):
                if i >= n:
                    break
                f.write("".join(f"{a}\t{b}\n" for a, b in zip(toks, tags)) + "\n")
    return dst


__all__ = ["REPO", "EXPERIMENTS", "NCBI", "write_corpus", "write_spec", "ncbi_subset", "shutil"]


def synthetic_corpus(dst: Path, sizes=(200, 60, 200), seed: int = 0) -> Path:
    """A corpus a tiny model learns in a few epochs: disease names from a small list in filler text."""
    import random

    rng = random.Random(seed)
    filler = "the a patient was seen with and of in treated for history reported no signs".split()
    single = ["flu", "measles", "gout", "asthma", "rickets", "malaria"]
    double = [("lyme", "disease"), ("hay", "fever"), ("sickle", "anemia")]
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "devel", "test"), sizes):
        lines = []
        for _ in range(n):
            rows = []
            for _ in range(rng.randint(4, 14)):
                r = rng.random()
                if r < 0.12:
                    rows.append((rng.choice(single), "B-Disease"))
                elif r < 0.18:
                    a, b = rng.choice(double)
                    rows += [(a, "B-Disease"), (b, "I-Disease")]
                else:
                    rows.append((rng.choice(filler), "O"))
            lines.append("\n".join(f"{w}\t{t}" for w, t in rows))
        (dst / f"{split}.tsv").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    return dst


def trial_runs_in_store(db: Path, experiment: str) -> list[tuple[str, str]]:
    """(run id, Ray trial id) of an experiment's trial runs, oldest first, read from the SQLite
    store of a job that is still running, without MLflow: an MlflowClient opened while the job
    creates the store runs the schema migrations a second time, and the job dies of it
    ("duplicate column name"). Empty while the store or the experiment does not exist yet."""
    import sqlite3
    from contextlib import closing

    if not db.exists():
        return []
    try:  # closing(): a sqlite3 connection's own `with` ends a transaction, it does not close
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return con.execute(
                "SELECT r.run_uuid, tid.value FROM runs r"
                " JOIN experiments e ON e.experiment_id = r.experiment_id"
                " JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = 'bioner.kind' AND kind.value = 'trial'"
                " JOIN tags tid ON tid.run_uuid = r.run_uuid AND tid.key = 'ray.trial_id'"
                " WHERE e.name = ? ORDER BY r.start_time, r.run_uuid",
                (experiment,),
            ).fetchall()
    except sqlite3.Error:  # tables not there yet, or locked by the job for a moment
        return []
