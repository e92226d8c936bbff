"""Micro-batching changes no optimizer step: one step's gradients with and without it (and with
packed micro-batches) are equal, with one worker and with two DDP workers (gloo), through the real
Ray Train worker set-up."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch

from bioner.config import TrainConfig
from bioner.data.batching import mrc_rows
from bioner.data.features import FeatureBuilder
from bioner.data.iob import read_split
from bioner.data.job import load_job_data
from bioner.data.specs import load_spec
from bioner.train.driver import fit, worker_job
from bioner.train.step import Step
from bioner.train.worker import setup_worker

# The per-worker check below lives in this test module, which Ray's workers cannot import.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory, minilm_tokenizer) -> str:
    """A tiny BERT without dropout: two forwards of the same rows give the same activations."""
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("still-bert")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(cfg).save_pretrained(d)
    minilm_tokenizer.save_pretrained(d)
    return str(d)


def _one_step_both_ways(job, out: str, micro_tokens: int) -> None:
    w = setup_worker(job)
    w.model.train()
    idx = next(iter(w.sampler))
    result = {}
    for name, max_tokens, packing in (
        ("whole", None, False),
        ("micro", micro_tokens, False),
        ("packed", 2 * w.step.row_len, True),
    ):
        w.step.max_tokens, w.step.packing = max_tokens, packing
        w.opt.zero_grad(set_to_none=True)
        result[name] = {
            "losses": w.step.backward(idx).tolist(),
            "parts": len(w.step.parts(idx)),
            "grads": [p.grad.detach().clone() for p in w.step.params],
        }
    whole = result["whole"]["grads"]
    # float tolerance, as torch.allclose(rtol=1e-4, atol=1e-7): <= 1 everywhere. (The key biases'
    # true gradient is 0, softmax being blind to a shift of every key: there both sides are 1e-13 noise.)
    worst = {
        way: max(
            float(((a - b).abs() / (1e-7 + 1e-4 * a.abs())).max())
            for a, b in zip(whole, result[way]["grads"], strict=True)
        )
        for way in ("micro", "packed")
    }
    report = {
        "worst": worst,
        "parts": result["micro"]["parts"],
        "whole_parts": result["whole"]["parts"],
        "packed_parts": result["packed"]["parts"],
        "losses": [result[way]["losses"] for way in ("whole", "micro", "packed")],
        "params": len(whole),
        "nonzero": sum(int(g.abs().sum() > 0) for g in whole),
        "sentences": len(idx),
    }
    Path(out, f"rank{w.rank}.json").write_text(json.dumps(report))


def _config(spec, encoder: str, workers: int, query: str, out) -> TrainConfig:
    return TrainConfig(
        dataset=str(spec),
        encoder=encoder,
        batch_size=32,
        max_length=64,
        dropout=0.0,
        seed=3,
        query_source=query,
        num_workers=workers,
        cpus_per_worker=1,
        output_dir=str(out),
        bf16=False,
    )  # fp32: the three layouts then differ by summation order alone


def _each_job(jobs: list, micro_tokens: int) -> None:
    for job, out in jobs:  # one after the other on the same workers, each job set up from scratch
        _one_step_both_ways(job, out, micro_tokens)


@pytest.fixture(scope="module")
def two_worker_runs(_ray_session, tmp_path_factory, make_dataset, still_bert):
    """The two-worker cases, both query settings, in one Ray Train run (a Ray Train start-up fewer): the
    result and each query's folder of rank reports. (worker_job starts Ray again if a test stopped it.)"""
    spec = make_dataset("micro", sizes=(64, 4, 4))
    d = tmp_path_factory.mktemp("micro-two-workers")
    jobs = {}
    for query in ("annotation", "none"):
        (d / query).mkdir()
        jobs[query] = worker_job(_config(spec, still_bert, 2, query, d / query), progress=False)
    pairs = [(job, str(d / query)) for query, job in jobs.items()]
    result = fit(jobs["annotation"], "micro", d / "ray", loop=functools.partial(_each_job, pairs, 48))
    return result, {query: d / query for query in jobs}


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("workers, query", [(1, "annotation"), (2, "annotation"), (2, "none")])
def test_micro_batched_step_has_the_whole_batch_gradient(tmp_path, make_dataset, still_bert, workers, query, request):
    if workers == 2:  # both two-worker cases share one run (two_worker_runs)
        result, outs = request.getfixturevalue("two_worker_runs")
        out = outs[query]
    else:
        spec = make_dataset("micro", sizes=(64, 4, 4))
        job = worker_job(_config(spec, still_bert, workers, query, tmp_path), progress=False)
        result = fit(
            job, "micro", tmp_path / "ray", loop=functools.partial(_one_step_both_ways, job, str(tmp_path), 48)
        )
        out = tmp_path
    assert result.error is None, result.error
    for rank in range(workers):
        r = json.loads((out / f"rank{rank}.json").read_text())
        assert r["whole_parts"] == 1 and r["parts"] >= 3  # 48 padded positions: several micro-batches
        assert r["packed_parts"] >= 2  # two packed rows a forward
        assert r["nonzero"] == r["params"]  # every parameter, both heads included, got a gradient
        assert r["worst"]["micro"] <= 1.0 and r["worst"]["packed"] <= 1.0, r
        assert r["losses"][1] == pytest.approx(r["losses"][0], rel=1e-5)
        assert r["losses"][2] == pytest.approx(r["losses"][0], rel=1e-5)


def test_micro_batches_cover_every_row_once_within_the_bound_and_end_with_both_tasks(make_dataset, minilm_tokenizer):
    spec = load_spec(make_dataset("parts", sizes=(40, 4, 4)))
    cfg = TrainConfig(
        dataset=str(spec.path), encoder="minilm", query_source="annotation", micro_batch_tokens=96, packing=False
    )  # the length-sorted split (packing's parts: tests/test_packing.py)
    data = load_job_data(cfg)
    fb = FeatureBuilder(minilm_tokenizer, spec.labels, cfg.max_length, data.queries, spec.types)
    enc = fb.encode(read_split(spec, "train").tokens, read_split(spec, "train").tags, mrc=True)
    step = Step(None, [], None, None, cfg, torch.device("cpu"), enc, minilm_tokenizer.pad_token_id)
    idx = list(range(0, 40, 2))
    parts = step.parts(idx)
    ner = [r for n, _ in parts if n for r in n]
    mrc = [r for _, m in parts if m for r in m]
    assert sorted(ner) == sorted(idx) and sorted(mrc) == sorted(mrc_rows(enc, idx))
    assert parts[-1][0] and parts[-1][1]  # the synchronised backward sees both heads
    for n, m in parts:
        for rows, lengths in ((n, step.ner_len), (m, step.mrc_len)):
            if rows and len(rows) > 1:
                assert len(rows) * max(lengths[r] for r in rows) <= 96
    real, padded = step.positions(idx)
    whole = Step(None, [], None, None, cfg.train_config(micro_batching=False), torch.device("cpu"), enc, 0)
    assert whole.parts(idx) == [(idx, mrc_rows(enc, idx))]
    assert real == whole.positions(idx)[0] and padded < whole.positions(idx)[1]
