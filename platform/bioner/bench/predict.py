"""`bioner bench predict`: `bioner predict`'s path (fp32 and int8) against
pipeline("token-classification") and Trainer.predict, on the same texts and the same weights (our
model exported as a token classifier), with the entities each system finds compared text by text
against bioner's fp32 ones."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from ..data.batching import sorted_batches
from ..data.iob import read_split
from ..data.specs import load_spec
from ..infer.tagger import Tagger
from ..infer.text import split_words
from ..model import ModelMeta, build_model, load_tokenizer, save_model
from ..tracking.models import resolve_model
from .config import BenchConfig
from .hf import export_token_classifier, pipeline_runner, trainer_predict_runner
from .measure import in_fresh_process, machine, peak_rss_mib, ratio, summarise

PREDICT_SYSTEMS = ("bioner predict", "bioner predict, int8", "pipeline", "Trainer.predict")
OURS = {"bioner predict": "fp32", "bioner predict, int8": "int8"}


def random_head_model(cfg: BenchConfig, out_dir: Path) -> Path:
    """The encoder with a seeded random head, saved as a bioner model (no trained model needed)."""
    spec = load_spec(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.encoder, len(spec.labels), cfg.dropout, cfg.trust_remote_code)
    meta = ModelMeta(
        labels=spec.labels,
        types=spec.types,
        dataset=spec.name,
        encoder=cfg.encoder,
        max_length=cfg.max_length,
        dropout=cfg.dropout,
    )
    return save_model(model, load_tokenizer(cfg.encoder, cfg.trust_remote_code), out_dir, meta)


def _timed_blocks(run, texts, repeats: int, tokens: int, padded: int) -> tuple[list[dict], list]:
    run(texts[:32])  # warm-up: first calls allocate and pick kernels
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ents = run(texts)
        out.append({"sentences": len(texts), "tokens": tokens, "padded": padded, "seconds": time.perf_counter() - t0})
    return out, ents


def predict_throughput(
    system: str,
    model_dir: str,
    hf_dir: str,
    texts: list[str],
    repeats: int,
    batch_size: int,
    threads: int,
    workdir: str,
) -> dict:
    """In a fresh process: one system's sentences/s over `texts`, and the entities it found."""
    torch.set_num_threads(threads)
    words = [split_words(t) for t in texts]
    tagger = Tagger.load(model_dir, batch_size=batch_size, precision=OURS.get(system, "fp32"))
    lengths = [len(window.input_ids) for window in tagger.encode([[word[0] for word in ws] for ws in words]).windows]
    tokens = sum(lengths)
    if system in OURS:
        padded = sum(
            len(b) * max(lengths[i] for i in b) for b in sorted_batches(lengths, batch_size, tagger.max_batch_tokens)
        )

        def run(xs):
            return [[(e["type"], e["start"], e["end"]) for e in es] for es in tagger.entities(xs)]
    elif system == "pipeline":
        run, padded = pipeline_runner(hf_dir), tokens  # batch size 1: no padding
    else:
        run, bs = trainer_predict_runner(hf_dir, words, workdir)
        padded = sum(len(lengths[b : b + bs]) * max(lengths[b : b + bs]) for b in range(0, len(lengths), bs))
    blocks, ents = _timed_blocks(run, texts, repeats, tokens, padded)
    return summarise(blocks) | {"peak_memory_mib": peak_rss_mib(), "entities": ents}


def run_predict_bench(cfg: BenchConfig, log=print) -> dict:
    split = read_split(load_spec(cfg.dataset), cfg.eval_split)
    texts = [" ".join(t) for t in split.tokens[: cfg.sentences]]
    threads = max(1, round(cfg.cpus_per_worker or os.cpu_count() or 1))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = resolve_model(cfg.model) if cfg.model else random_head_model(cfg, Path(tmp) / "bioner")
        hf_dir = export_token_classifier(Path(model_dir), Path(tmp) / "hf")
        for name in PREDICT_SYSTEMS:
            log(f"prediction benchmark: {name} ...")
            results[name] = in_fresh_process(
                predict_throughput,
                name,
                str(model_dir),
                str(hf_dir),
                texts,
                cfg.repeats,
                cfg.eval_batch_size,
                threads,
                tmp,
            )
    ours = results["bioner predict"].pop("entities")
    agreement = {}
    for name in PREDICT_SYSTEMS[1:]:
        theirs = results[name].pop("entities")
        same = sum(sorted(a) == sorted(b) for a, b in zip(ours, theirs, strict=True))
        agreement[name] = {"texts_identical": same, "texts": len(texts)}
    n_ent = sum(len(e) for e in ours)
    ratios = {f"{ours} / {n} (sentences/s)": ratio(results, ours, n) for ours in OURS for n in PREDICT_SYSTEMS[2:]}
    ratios["bioner predict, int8 / bioner predict (fp32)"] = ratio(results, "bioner predict, int8", "bioner predict")
    return {
        "kind": "predict",
        "config": cfg.model_dump(),
        "machine": machine(),
        "model": str(cfg.model or "random head"),
        "entities_found": n_ent,
        "results": results,
        "agreement": agreement,
        "ratios": ratios,
    }
