"""`bioner bench train`: training throughput of bioner's real path against the plain HF recipe.

bioner single task and multi-task run through Ray Train (one worker) with their own per-worker
function, which times the same optimizer steps the training loop runs; the HF recipe
(AutoModelForTokenClassification + Trainer + DataCollatorForTokenClassification) runs in a
fresh process. All train on the same seeded subset of training sentences, with the same encoder,
batch size and number of steps.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data.iob import read_split
from ..data.specs import load_spec
from ..errors import ConfigError
from ..train.contract import WorkerJob
from ..train.driver import fit, worker_job
from ..train.local_ray import ensure_ray
from ..train.worker import setup_worker
from .config import HF_SYSTEMS, HF_TRAINER, HF_TRAINER_BF16, VARIANTS, BenchConfig
from .hf import train_throughput
from .measure import StepBudget, StepRecorder, in_fresh_process, machine, ratio


@dataclass(frozen=True)
class BenchJob:
    """A benchmark run as its Ray Train worker sees it."""

    job: WorkerJob
    budget: StepBudget
    out: str  # where the worker writes its figures (JSON)


def bench_loop_per_worker(bench: BenchJob) -> None:
    """The training loop's own setup and optimizer steps, timed: no scoring, checkpoints or logging."""
    worker = setup_worker(bench.job)
    rec = StepRecorder(worker.step.positions, bench.budget, [window.sentence for window in worker.enc.windows])
    n_params = sum(p.numel() for p in worker.net.parameters())
    worker.model.train()
    for epoch in range(math.ceil(rec.total / max(1, len(worker.sampler)))):
        worker.sampler.set_epoch(epoch)
        worker.step.set_epoch(epoch)
        for window_ids in worker.sampler:
            t0 = time.perf_counter()
            worker.step(window_ids)  # returns the losses with .item(): the step has finished, on GPU too
            if rec.add(window_ids, time.perf_counter() - t0):
                return rec.write(bench.out, worker.device, n_params, worker.step.precision)
    rec.write(bench.out, worker.device, n_params, worker.step.precision)


def bench_sentences(cfg: BenchConfig) -> int:
    return (cfg.skip_steps + cfg.steps * cfg.repeats) * cfg.batch_size


def subset_config(cfg: BenchConfig, overrides: dict) -> TrainConfig:
    """The training config every system uses: the same seeded subset of the training split."""
    n_train = len(read_split(load_spec(cfg.dataset), "train"))
    need = bench_sentences(cfg)
    if need > n_train:
        raise ConfigError(f"steps/skip_steps/repeats: {need} sentences needed, the training split has {n_train}")
    return cfg.train_config(
        **{"train_splits": ["train"], "eval_split": "devel", "train_fraction": need / n_train, "epochs": 1, **overrides}
    )


def bench_bioner_train(cfg: TrainConfig, budget: StepBudget, workdir: Path) -> dict:
    """Our real training path (Ray Train, one worker), stopped after the measured steps."""
    out = workdir / f"bioner-{os.getpid()}-{time.monotonic_ns()}.json"
    job = worker_job(cfg, progress=False)
    result = fit(
        job, out.stem, workdir / "ray", loop=functools.partial(bench_loop_per_worker, BenchJob(job, budget, str(out)))
    )
    if result.error:
        raise result.error
    return json.loads(out.read_text(encoding="utf-8"))


def run_train_bench(cfg: BenchConfig, log=print) -> dict:
    unknown = [s for s in cfg.systems if s not in VARIANTS and s not in HF_SYSTEMS]
    if unknown:
        raise ConfigError(f"systems: unknown {unknown}; choose from {[*VARIANTS, *HF_SYSTEMS]}")
    budget = StepBudget(cfg.skip_steps, cfg.steps, cfg.repeats)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cfg.systems:
            log(f"training benchmark: {name} ...")
            if name in HF_SYSTEMS:
                sub = subset_config(cfg, {"beta": 0.0})
                ensure_ray()
                threads = worker_job(sub).threads
                results[name] = in_fresh_process(
                    train_throughput, sub.model_dump(), budget, threads, tmp, HF_SYSTEMS[name]
                )
            else:
                results[name] = bench_bioner_train(subset_config(cfg, VARIANTS[name]), budget, Path(tmp))
    if cfg.peak_tflops:
        for r in results.values():
            if "model_tflops" in r:
                r["mfu"] = r["model_tflops"] / cfg.peak_tflops
    return {
        "kind": "train",
        "config": cfg.model_dump(),
        "machine": machine(),
        "results": results,
        "ratios": train_ratios(results),
    }


def train_ratios(results: dict) -> dict:
    out = {
        "bioner single (default) / HF Trainer (sentences/s)": ratio(results, "bioner single", HF_TRAINER),
        "bioner single, fp32 unpacked / HF Trainer": ratio(results, "bioner single, fp32 unpacked", HF_TRAINER),
        "bioner single, grouped / HF Trainer": ratio(results, "bioner single, grouped", HF_TRAINER),
        "bioner single, whole batches / HF Trainer": ratio(results, "bioner single, whole batches", HF_TRAINER),
        "bioner single (default) / HF Trainer, bf16": ratio(results, "bioner single", HF_TRAINER_BF16),
        "HF Trainer, bf16 / HF Trainer": ratio(results, HF_TRAINER_BF16, HF_TRAINER),
        "micro-batches / whole batches, single task": ratio(results, "bioner single", "bioner single, whole batches"),
        "micro-batches / whole batches, multi-task": ratio(results, "bioner multi", "bioner multi, whole batches"),
        "default / fp32 unpacked, single task": ratio(results, "bioner single", "bioner single, fp32 unpacked"),
        "default / fp32 unpacked, multi-task": ratio(results, "bioner multi", "bioner multi, fp32 unpacked"),
        "multi-task step / single-task step (time)": ratio(results, "bioner single", "bioner multi"),
        "multi-task, no query / single-task (time)": ratio(results, "bioner single", "bioner multi, no query"),
    }
    return {k: v for k, v in out.items() if v is not None}
