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
def ray_local():
    """One local Ray for the whole session; the trainer reuses it instead of starting its own."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


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
